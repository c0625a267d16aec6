"""Benchmark: serving generation over HTTP with continuous batching, against same-run baselines.

Starts ``ledger serve`` (SQLite, a random SAE on the model's middle layer, three profiles) and streams chat
completions from 1, 8 and 32 concurrent clients: prompts of 1 to ~300 tokens, a quarter unsteered, half greedy
and half sampled, 32 to 128 new tokens. Reports aggregate tokens/s, time to first token (p50/p99) and
inter-token latency (p99, between streamed chunks). Baselines in the same run: transformers' ``generate()``
on the same prompts left-padded into batches of 8 (no HTTP, plain model, greedy), and the 8-client requests
sent one after another. Also: the time to first token of a ~300-token request arriving while 7 others decode,
against its own prefill time plus two decode steps; and the decode pace of steered vs unsteered rows sharing
the 8-client batches.

    python bench/serving.py --model models/smollm2-135m-instruct
    python bench/serving.py --smoke          # a tiny random model, a few requests: checks that it runs

Exits 1 when a target is missed (never with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import DEFAULT_MODEL, Figure, Server, percentile, report  # noqa: E402
from bench.steering_generation import random_sae  # noqa: E402
from steering.models import load_model  # noqa: E402
from steering.sae import save_sae  # noqa: E402
from steering.tiny import build_tiny_model  # noqa: E402

TEXT = (
    "A ledger of steering profiles records every change as an event, and every generation as an execution that "
    "can be replayed to the byte. The sea was calm that morning; gulls circled the harbour while the fishing boats "
    "came in with their nets full. Sparse autoencoders find features in the residual stream of a language model, "
    "and adding a feature's decoder direction changes what the model says. "
)
PROMPT_TOKENS = (1, 12, 300, 40, 160, 6, 90, 240, 3, 60, 200, 25, 120, 280, 8, 150)
NEW_TOKENS = (32, 64, 96, 128)
CLIENT_LEVELS = (1, 8, 32)
BASELINE_BATCH = 8
TARGET_VS_GENERATE = 0.8
TARGET_STEERED = 0.97


@dataclass
class Outcome:
    """One streamed request as the client saw it."""

    steered: bool
    sent: float
    chunks: list[float] = field(default_factory=list)  # arrival times of content chunks
    completion_tokens: int = 0

    @property
    def ttft(self) -> float:
        return self.chunks[0] - self.sent

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:])]

    def decode_rate(self) -> float | None:
        span = self.chunks[-1] - self.chunks[0] if len(self.chunks) > 1 else 0.0
        return (self.completion_tokens - 1) / span if span > 0 and self.completion_tokens > 1 else None


def prompt_of(tokenizer: Any, tokens: int) -> str:
    ids = tokenizer(TEXT * 4, add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def workload(tokenizer: Any, count: int, profiles: list[str], scale: int = 1) -> list[dict[str, Any]]:
    bodies = []
    for i in range(count):
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt_of(tokenizer, max(1, PROMPT_TOKENS[i % 16] // scale))}],
            "max_tokens": max(2, NEW_TOKENS[i % 4] // scale),
            "temperature": 0.0 if i % 2 else 0.8,
            "seed": i,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if i % 4:
            body["profile"] = profiles[i % len(profiles)]
        bodies.append(body)
    return bodies


def stream(http: httpx.Client, body: dict[str, Any], on_first: threading.Semaphore | None = None) -> Outcome:
    outcome = Outcome(steered="profile" in body, sent=time.perf_counter())
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                outcome.completion_tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                outcome.chunks.append(time.perf_counter())
                if on_first is not None and len(outcome.chunks) == 1:
                    on_first.release()
    if response.status_code != 200 or not outcome.chunks:
        raise RuntimeError(f"request failed or produced nothing: status {response.status_code}")
    return outcome


def run_clients(url: str, bodies: list[dict[str, Any]], clients: int) -> tuple[list[Outcome], float]:
    """``clients`` threads, each sending its share of ``bodies`` one after another; (outcomes, wall seconds)."""

    def client(share: list[dict[str, Any]]) -> list[Outcome]:
        with httpx.Client(base_url=url, timeout=600) as http:
            return [stream(http, body) for body in share]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:  # a client's error is raised once every client is done
        shares = list(pool.map(client, [bodies[c::clients] for c in range(clients)]))
    return [outcome for share in shares for outcome in share], time.perf_counter() - started


def summary(outcomes: list[Outcome], seconds: float) -> dict[str, float]:
    gaps = [gap for outcome in outcomes for gap in outcome.gaps()]
    return {
        "tokens_per_s": sum(o.completion_tokens for o in outcomes) / seconds,
        "ttft_p50_ms": percentile([o.ttft for o in outcomes], 0.5) * 1000,
        "ttft_p99_ms": percentile([o.ttft for o in outcomes], 0.99) * 1000,
        "itl_p99_ms": percentile(gaps, 0.99) * 1000 if gaps else 0.0,
        "requests": len(outcomes),
        "seconds": seconds,
    }


def generate_baseline(model: Path, bodies: list[dict[str, Any]]) -> float:
    """tokens/s of transformers' generate() on the same prompts, left-padded in batches of 8 (greedy, no HTTP)."""
    loaded = load_model(model, device="cpu", batch_invariant=False)
    tokenizer = loaded.tokenizer
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    tokens, seconds = 0, 0.0
    for start in range(0, len(bodies), BASELINE_BATCH):
        batch = bodies[start : start + BASELINE_BATCH]
        texts = [tokenizer.apply_chat_template(b["messages"], add_generation_prompt=True, tokenize=False) for b in batch]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        began = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(
                **encoded, max_new_tokens=max(b["max_tokens"] for b in batch), do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        seconds += time.perf_counter() - began
        for row, body in zip(out[:, encoded["input_ids"].shape[1]:].tolist(), batch):
            produced = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
            tokens += min(produced + 1, body["max_tokens"])  # an end-of-sequence token counts, as the server counts it
    return tokens / seconds


def arrival_probe(url: str, tokenizer: Any, profiles: list[str], scale: int) -> tuple[float, float, float]:
    """(TTFT of a ~300-token request arriving while 7 decode, its solo prefill time, the decode step), seconds."""
    probe = {
        "messages": [{"role": "user", "content": prompt_of(tokenizer, 300 // scale)}], "max_tokens": 2,
        "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True},
    }
    with httpx.Client(base_url=url, timeout=600) as http:
        solo = statistics.median(stream(http, probe).ttft for _ in range(3))
    long = [
        {**body, "max_tokens": 128 if scale == 1 else 600, "temperature": 0.0}
        for body in workload(tokenizer, 7, profiles, scale)
    ]
    busy: list[Outcome] = []
    decoding = threading.Semaphore(0)

    def decoder(body: dict[str, Any]) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            busy.append(stream(http, body, on_first=decoding))

    threads = [threading.Thread(target=decoder, args=(body,)) for body in long]
    for thread in threads:
        thread.start()
    for _ in long:  # all seven are decoding (their prefill is done)
        if not decoding.acquire(timeout=600):
            raise RuntimeError("the seven decoding requests did not start")
    time.sleep(0.5)
    with httpx.Client(base_url=url, timeout=600) as http:
        arriving = stream(http, probe)
    for thread in threads:
        thread.join()
    recent = [
        gap for outcome in busy for gap, at in zip(outcome.gaps(), outcome.chunks[1:])
        if arriving.sent - 3.0 <= at <= arriving.sent
    ]
    step = statistics.median(recent or [gap for outcome in busy for gap in outcome.gaps()])
    return arriving.ttft, solo, step


def random_sae_dir(model: Path, directory: Path) -> Path:
    config = json.loads((model / "config.json").read_text())
    return save_sae(random_sae(int(config["hidden_size"]), int(config["num_hidden_layers"]) // 2, 256), directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends (default 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, few requests; judge nothing")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads for the server and the generate() baseline alike (default: torch's own choice). On a "
        "CPU shared with other work, 1 avoids OpenMP threads spinning while their partner is descheduled",
    )
    args = parser.parse_args()
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 4 if args.smoke else 1
    rounds = 1 if args.smoke else args.rounds
    levels = (1, 2, 4) if args.smoke else CLIENT_LEVELS

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model = build_tiny_model(scratch / "tiny", max_positions=1024) if args.smoke else args.model
        if not (Path(model) / "config.json").exists():
            print(f"model directory {model} not found (run `ledger models fetch`, or use --smoke)", file=sys.stderr)
            return 2
        sae = random_sae_dir(Path(model), scratch / "sae")
        with Server(
            ["-m", "ledger", "serve", "--no-auth", "--no-access-log", "--model", str(model), "--sae", str(sae)],
            {"LEDGER_DATABASE_URL": f"sqlite:///{scratch / 'ledger.sqlite'}", "LEDGER_DEVICE": "cpu",
             "LEDGER_MAX_BATCH": "32", "LEDGER_MAX_QUEUE": "128", **threads},
            "/v1/models",
        ) as server:
            url = server.url("")
            profiles = []
            for i in range(3):
                body = {"name": f"bench {i}", "steering": {str(i * 10 + k): 4.0 for k in range(4)}}
                httpx.post(f"{url}/api/profiles", json=body, timeout=60).raise_for_status()
                profiles.append(body["name"])
            tokenizer = load_model(model, device="cpu").tokenizer
            run_clients(url, workload(tokenizer, 2, profiles, 8), 2)  # warm up
            eight = levels[1]
            results: dict[int, dict[str, float]] = {}
            for clients in levels:
                bodies = workload(tokenizer, clients * rounds * (4 if clients == 1 else 1), profiles, scale)
                outcomes, seconds = run_clients(url, bodies, clients)
                results[clients] = summary(outcomes, seconds)
                print(f"{clients:>2} clients: {json.dumps({k: round(v, 1) for k, v in results[clients].items()})}", flush=True)
                if clients == eight:  # a quarter of the rows are unsteered, the rest steered
                    steered_rate = statistics.mean(r for o in outcomes if o.steered and (r := o.decode_rate()))
                    unsteered_rate = statistics.mean(r for o in outcomes if not o.steered and (r := o.decode_rate()))
            sequential_bodies = workload(tokenizer, eight * rounds, profiles, scale)
            sequential = summary(*run_clients(url, sequential_bodies, 1))
            print(f"one after another: {json.dumps({k: round(v, 1) for k, v in sequential.items()})}", flush=True)
            ttft, solo, step = arrival_probe(url, tokenizer, profiles, scale)
            print(f"arrival while 7 decode: ttft {ttft * 1000:.0f} ms; solo prefill {solo * 1000:.0f} ms; "
                  f"decode step {step * 1000:.0f} ms", flush=True)
        baseline = generate_baseline(Path(model), sequential_bodies)
        print(f"generate() padded batches of {BASELINE_BATCH}: {baseline:.1f} tok/s", flush=True)

    load = (f"{torch.get_num_threads()} torch thread(s); load average {os.getloadavg()[0]:.1f} at the end "
            "(a CPU shared with other work)")
    name = Path(model).name if not args.smoke else "tiny random model"

    def detail(level: dict[str, float]) -> str:
        return (f"TTFT p50 {level['ttft_p50_ms']:.0f} ms, p99 {level['ttft_p99_ms']:.0f} ms; inter-token p99 "
                f"{level['itl_p99_ms']:.0f} ms; {level['requests']:.0f} requests; {name}; {load}")

    top = levels[-1]
    figures = [
        Figure(name="serving tokens/s, 1 client (HTTP, streamed)", value=results[1]["tokens_per_s"], unit="tok/s",
               target="—", met=True, detail=detail(results[1])),
        Figure(name=f"serving tokens/s, {eight} concurrent clients", value=results[eight]["tokens_per_s"], unit="tok/s",
               target=f"≥ {TARGET_VS_GENERATE}×", met=results[eight]["tokens_per_s"] / baseline >= TARGET_VS_GENERATE,
               baseline=baseline, baseline_label=f"transformers generate(), same prompts padded in batches of {BASELINE_BATCH}",
               ratio=results[eight]["tokens_per_s"] / baseline, detail=detail(results[eight])),
        Figure(name=f"serving tokens/s, {eight} concurrent clients vs one after another",
               value=results[eight]["tokens_per_s"], unit="tok/s", target="> 1×",
               met=results[eight]["tokens_per_s"] > sequential["tokens_per_s"], baseline=sequential["tokens_per_s"],
               baseline_label="the same requests sent one after another",
               ratio=results[eight]["tokens_per_s"] / sequential["tokens_per_s"], detail=detail(sequential)),
        Figure(name=f"serving tokens/s, {top} concurrent clients", value=results[top]["tokens_per_s"], unit="tok/s",
               target=f"> {eight} clients", met=results[top]["tokens_per_s"] > results[eight]["tokens_per_s"],
               baseline=results[eight]["tokens_per_s"], baseline_label=f"{eight} clients",
               ratio=results[top]["tokens_per_s"] / results[eight]["tokens_per_s"], detail=detail(results[top])),
        Figure(name="time to first token, arriving while 7 decode", value=ttft * 1000, unit="ms",
               target="≤ own prefill + 2 decode steps", met=ttft <= solo + 2 * step, baseline=(solo + 2 * step) * 1000,
               baseline_label=f"its prefill alone {solo * 1000:.0f} ms + 2 × step {step * 1000:.0f} ms",
               ratio=ttft / (solo + 2 * step), detail=f"a ~300-token prompt; {name}; {load}"),
        Figure(name=f"steered vs unsteered decode pace, mixed batch ({eight} clients)", value=steered_rate,
               unit="tok/s", target=f"≥ {TARGET_STEERED}×",
               met=steered_rate / unsteered_rate >= TARGET_STEERED,
               baseline=unsteered_rate, baseline_label="unsteered rows of the same batches",
               ratio=steered_rate / unsteered_rate,
               detail=f"per-request tokens/s after the first token; {name}"),
    ]
    return report(figures, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
