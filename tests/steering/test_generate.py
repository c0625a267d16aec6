"""The step loop: reproducible per seed, per-row steering, batch-invariant, streaming."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from steering.generate import Batch, GenerationRequest, environment_fingerprint, generate, new_row
from steering.hooks import SteeringVector
from steering.prompts import render_chat
from steering.tiny import build_tiny_tokenizer

from .conftest import D_MODEL, LAYER, random_sae

PROMPTS = ["Hello world", "The quick brown fox", "Once upon a time", "Tell me about sparse autoencoders please"]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def profile_vectors(count: int = 4, scale: float = 8.0) -> list[SteeringVector | None]:
    generator = torch.Generator().manual_seed(7)
    return [None] + [SteeringVector(LAYER, torch.randn(D_MODEL, generator=generator) * scale) for _ in range(count - 1)]


def test_same_request_and_seed_give_identical_text(loaded) -> None:
    for request in (
        GenerationRequest(prompt=PROMPTS[0], max_tokens=16),
        GenerationRequest(messages=chat(PROMPTS[1]), max_tokens=16, temperature=1.0, top_p=0.9, seed=42),
    ):
        first, second = generate(loaded, [request]), generate(loaded, [request])
        assert first[0].text == second[0].text
        assert first[0].token_ids == second[0].token_ids


def test_seeds_pick_different_samples(loaded) -> None:
    texts = {generate(loaded, [GenerationRequest(prompt=PROMPTS[2], max_tokens=16, temperature=1.5, seed=s)])[0].text for s in range(4)}
    assert len(texts) > 1


def test_strong_steering_changes_greedy_text_and_clearing_restores_it(loaded) -> None:
    plain = GenerationRequest(prompt=PROMPTS[3], max_tokens=16)
    sae = random_sae()
    from steering.sae import steering_vector

    vector = steering_vector(sae, {3: 6.0, 17: -4.0})
    before = generate(loaded, [plain])[0]
    steered = generate(loaded, [replace(plain, steering=SteeringVector(LAYER, vector))])[0]
    after = generate(loaded, [plain])[0]
    assert steered.token_ids != before.token_ids
    assert after.text == before.text and after.token_ids == before.token_ids


def test_batch_equals_alone_for_16_requests_over_4_profiles(loaded) -> None:
    profiles = profile_vectors()
    requests = []
    for index in range(16):
        sampling = {"temperature": 0.0} if index % 2 == 0 else {"temperature": 0.9, "top_p": 0.85}
        requests.append(
            GenerationRequest(
                messages=chat(PROMPTS[index % 4]) if index % 3 else None,
                prompt=None if index % 3 else PROMPTS[(index // 4) % 4],
                max_tokens=8 + index % 5,
                seed=1000 + index,
                steering=profiles[(index // 2) % 4],
                **sampling,
            )
        )
    batched = generate(loaded, requests)
    alone = [generate(loaded, [request])[0] for request in requests]
    for together, solo in zip(batched, alone):
        assert together.text == solo.text
        assert together.token_ids == solo.token_ids
        assert together.output_sha256 == solo.output_sha256


def test_rows_join_and_leave_a_running_batch_without_changing_their_tokens(loaded) -> None:
    """Long prompts (several prefill chunks) and short ones, joining at different steps, steered or not."""
    profiles = profile_vectors()
    long_prompt = " ".join(PROMPTS * 4)
    requests = [
        GenerationRequest(prompt=long_prompt, max_tokens=20, temperature=0.8, seed=1, steering=profiles[1]),
        GenerationRequest(prompt=PROMPTS[0], max_tokens=6, seed=2),
        GenerationRequest(prompt=long_prompt[:150], max_tokens=9, temperature=1.1, seed=3, steering=profiles[2]),
        GenerationRequest(messages=chat(PROMPTS[3]), max_tokens=14, temperature=0.5, top_p=0.8, seed=4),
    ]
    batch = Batch(loaded, step_tokens=40)
    rows = [new_row(loaded, request) for request in requests]
    batch.add(rows[0])
    for index, row in enumerate(rows[1:], start=1):
        for _ in range(index * 3):
            batch.step()
        batch.add(row)
    widths = []
    while batch.rows:
        widths.append(len(batch.rows))
        batch.step()
    assert max(widths) >= 3
    assert [row.tokens for row in rows] == [list(generate(loaded, [r])[0].token_ids) for r in requests]


def test_a_new_prompt_starts_at_the_next_step_however_long_the_prompt_prefilling_before_it(loaded) -> None:
    """The step's prompt tokens are shared a chunk at a time, round after round: a short request that joins while
    a long prompt prefills is prefilled, and answers, long before the long prompt is done."""
    long_request = GenerationRequest(prompt=" ".join(PROMPTS * 6), max_tokens=2, seed=1)
    short_request = GenerationRequest(prompt=PROMPTS[0], max_tokens=3, seed=2)
    batch = Batch(loaded, step_tokens=128)
    long_row, short_row = new_row(loaded, long_request), new_row(loaded, short_request)
    assert len(long_row.prompt_ids) > 3 * batch.step_tokens
    batch.add(long_row)
    batch.step()
    batch.add(short_row)
    batch.step()
    assert short_row.decoding  # its whole prompt ran in the step after it came
    while short_row.finish_reason is None:
        batch.step()
    assert not long_row.decoding  # answered while the long prompt still prefills
    while batch.rows:
        batch.step()
    assert [long_row.tokens, short_row.tokens] == [list(generate(loaded, [r])[0].token_ids)
                                                   for r in (long_request, short_request)]


def test_a_new_prompt_starts_beside_decoding_rows_even_when_they_use_the_whole_step_budget(loaded) -> None:
    """A step budget smaller than a prompt chunk plus the rows decoding (``LEDGER_STEP_TOKENS`` set low): the oldest
    prompt still gets a chunk every step, so it does not wait for the running rows to end."""
    decoding = [GenerationRequest(prompt=PROMPTS[index], max_tokens=40, seed=index) for index in range(3)]
    waiting = GenerationRequest(prompt=" ".join(PROMPTS * 2), max_tokens=2, seed=9)
    batch = Batch(loaded, step_tokens=3)
    rows = [new_row(loaded, request) for request in decoding]
    for row in rows:
        batch.add(row)
    while not all(row.decoding for row in rows):
        batch.step()
    running = [row for row in rows if row.finish_reason is None]
    assert running
    late = new_row(loaded, waiting)
    batch.add(late)
    while late.finish_reason is None:
        batch.step()
    assert any(row.finish_reason is None for row in running)  # answered while others still decode
    while batch.rows:
        batch.step()
    assert [row.tokens for row in (*rows, late)] == [list(generate(loaded, [r])[0].token_ids)
                                                     for r in (*decoding, waiting)]


def test_stop_string_truncates_and_reports_stop(loaded) -> None:
    request = GenerationRequest(prompt=PROMPTS[0], max_tokens=16)
    full = generate(loaded, [request])[0]
    assert full.finish_reason == "length" and full.completion_tokens == 16
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    stopped = generate(loaded, [replace(request, stop=(stop,))])[0]
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert full.text.startswith(stopped.text)


def test_result_reports_counts_and_sha256(loaded) -> None:
    result = generate(loaded, [GenerationRequest(messages=chat(PROMPTS[2]), max_tokens=5)])[0]
    assert result.prompt_tokens > 3
    assert result.output_sha256 == hashlib.sha256(result.text.encode()).hexdigest()
    assert result.duration_s > 0


def test_chat_without_template_is_a_plain_join() -> None:
    tokenizer = build_tiny_tokenizer(chat_template=False)
    assert render_chat(tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]) == "system: Be brief.\nuser: Hi\nassistant:"


def test_environment_fingerprint_names_what_determines_numbers(loaded) -> None:
    fingerprint = environment_fingerprint(loaded, random_sae())
    assert fingerprint["model_digest"] == loaded.digest
    assert fingerprint["device"] == "cpu" and fingerprint["dtype"] == "float32"
    assert {"torch", "transformers", "sae_digest", "tokenizer_digest", "batch_invariant"} <= fingerprint.keys()


def test_ignore_eos_always_fills_max_tokens(loaded) -> None:
    requests = [GenerationRequest(prompt=p, max_tokens=12, temperature=1.0, seed=s, ignore_eos=True) for s, p in enumerate(PROMPTS)]
    for result in generate(loaded, requests):
        assert (result.completion_tokens, result.finish_reason) == (12, "length")
        assert len(result.token_ids) == 12


def test_generation_prints_no_warning_from_transformers(loaded, caplog, recwarn) -> None:
    caplog.set_level("WARNING")
    request = GenerationRequest(messages=chat(PROMPTS[0]), max_tokens=6, temperature=0.7, seed=1, steering=profile_vectors()[1])
    generate(loaded, [request, GenerationRequest(prompt=PROMPTS[1], max_tokens=4)])
    assert [str(w.message) for w in recwarn.list] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("transformers")] == []
