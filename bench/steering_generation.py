"""Benchmark: steered vs unsteered generation throughput, and mixed- vs uniform-profile batches.

    python bench/steering_generation.py --model models/smollm2-135m-instruct
    python bench/steering_generation.py --tiny          # smoke run on a tiny random model

Prints tokens/s and ratios; exits 1 when steered/unsteered < 0.97 (batch 1 and 8) or
mixed/uniform < 0.95. ``LEDGER_DEVICE=cuda`` (and ``LEDGER_DTYPE``) measure on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import DEFAULT_MODEL, Figure, report  # noqa: E402
from steering.generate import GenerationRequest, generate  # noqa: E402
from steering.hooks import SteeringVector  # noqa: E402
from steering.models import load_model  # noqa: E402
from steering.sae import SAE, load_sae, steering_vector  # noqa: E402
from steering.tiny import build_tiny_model  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a few sentences about the sea."}]
STEERED_TARGET = 0.97
MIXED_TARGET = 0.95


def random_sae(d_in: int, layer: int, d_sae: int = 1024) -> SAE:
    generator = torch.Generator().manual_seed(0)
    w_dec = torch.randn(d_sae, d_in, generator=generator)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    return SAE(w_dec.T.clone(), w_dec, torch.zeros(d_sae), torch.zeros(d_in), f"blocks.{layer}.hook_resid_post", layer)


def tokens_per_second(run: Callable[[], list]) -> float:
    start = time.perf_counter()
    results = run()
    return sum(r.completion_tokens for r in results) / (time.perf_counter() - start)


def compare(name: str, baseline: Callable[[], list], candidate: Callable[[], list], repeats: int) -> tuple[float, float]:
    """Baseline and candidate tokens/s from ``repeats`` back-to-back pairs, order alternating.

    On a shared machine the load drifts between runs: each pair's ratio compares two runs taken under nearly
    the same load, so the median pair (by ratio) is the figure; its two rates are returned.
    """
    baseline(), candidate()  # warm up
    pairs = []
    for repeat in range(repeats):
        order = (candidate, baseline) if repeat % 2 else (baseline, candidate)
        rates = {run: tokens_per_second(run) for run in order}  # timed in that order
        pairs.append((rates[baseline], rates[candidate]))
    pairs.sort(key=lambda pair: pair[1] / pair[0])
    base, cand = pairs[len(pairs) // 2]
    spread = ", ".join(f"{c / b:.3f}" for b, c in pairs)
    print(f"{name:<34} {base:9.1f} tok/s -> {cand:9.1f} tok/s   ratio {cand / base:.3f} (pair ratios: {spread})")
    return base, cand


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--sae", type=Path, default=None, help="SAE directory (default: a random SAE)")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model (smoke run)")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per row (default 32; 64 with --tiny)")
    parser.add_argument("--repeats", type=int, default=None, help="pairs of runs (default 7; 15 with --tiny)")
    parser.add_argument("--strength", type=float, default=4.0)
    parser.add_argument("--smoke", action="store_true", help="with --tiny: check that it runs, judge nothing")
    args = parser.parse_args()
    args.max_tokens = args.max_tokens or (64 if args.tiny else 32)
    args.repeats = args.repeats or (15 if args.tiny else 7)

    with tempfile.TemporaryDirectory() as scratch:
        path = build_tiny_model(Path(scratch) / "tiny") if args.tiny else args.model
        if not Path(path).is_dir():
            print(f"model directory {path} not found (fetch it, or use --tiny)", file=sys.stderr)
            return 2
        loaded = load_model(path)
        layer = loaded.num_layers // 2
        sae = load_sae(args.sae) if args.sae else random_sae(loaded.d_model, layer)
        profiles = [
            SteeringVector(sae.layer, steering_vector(sae, {i: args.strength, i + 100: -args.strength / 2}, dtype=loaded.dtype))
            for i in range(8)
        ]

        def runner(count: int, steering: list[SteeringVector | None]) -> Callable[[], list]:
            batch = [
                GenerationRequest(messages=PROMPT, max_tokens=args.max_tokens, temperature=0.7, seed=i, steering=steering[i], ignore_eos=True)
                for i in range(count)
            ]
            return lambda: generate(loaded, batch)

        device = f"{loaded.device} ({str(loaded.dtype).removeprefix('torch.')})"
        print(f"model {path} on {device}, steering layer {sae.layer}, {args.max_tokens} tokens/row")
        figures = []
        for size in (1, 8):
            base, steered = compare(
                f"batch {size}: unsteered -> steered",
                runner(size, [None] * 8),
                runner(size, [profiles[0]] * 8),
                args.repeats,
            )
            figures.append(Figure(
                name=f"steered generation tokens/s, batch {size}", value=steered, unit="tok/s", target=f"≥ {STEERED_TARGET}×",
                met=steered / base >= STEERED_TARGET, baseline=base, baseline_label="same model unsteered",
                ratio=steered / base, detail=f"{Path(path).name}, {args.max_tokens} tokens/row, median of {args.repeats} pairs",
                device=device,
            ))
        uniform, mixed = compare(
            "batch 8: uniform -> 8 profiles", runner(8, [profiles[0]] * 8), runner(8, profiles), args.repeats
        )
        figures.append(Figure(
            name="mixed-profile batch (8 rows, 8 profiles)", value=mixed, unit="tok/s", target=f"≥ {MIXED_TARGET}×",
            met=mixed / uniform >= MIXED_TARGET, baseline=uniform, baseline_label="uniform-profile batch",
            ratio=mixed / uniform, detail=f"{Path(path).name}, median of {args.repeats} pairs", device=device,
        ))
    return report(figures, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
