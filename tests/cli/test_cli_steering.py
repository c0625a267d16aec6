"""`ledger generate`, `ledger replay` and `ledger sae features` with a tiny model (SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.steering.conftest import LAYER, sae_dir, tiny_model_dir  # noqa: F401 - fixtures


def ledger(tmp_path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "--database", f"sqlite:///{tmp_path / 'l.sqlite'}", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_generate_records_a_run_that_replays_exactly(tmp_path, tiny_model_dir, sae_dir):
    model = ["--model", str(tiny_model_dir), "--sae", str(sae_dir)]
    ledger(tmp_path, "create", "loud", "--layer", str(LAYER), "-f", "3=25", "-f", "9=25")
    out = json.loads(ledger(tmp_path, "generate", "hello sea", "--profile", "loud", "--seed", "4", "--temperature",
                            "0.8", "--max-tokens", "8", "--compare", "--json", *model).stdout)
    assert out["profile_version"] == 1 and out["seed"] == 4 and out["text"] != out["unsteered"]
    replayed = json.loads(ledger(tmp_path, "replay", out["execution_id"], "--json", *model).stdout)
    assert replayed["reproduced"] is True and replayed["replay_sha256"] == out["output_sha256"]
    listed = json.loads(ledger(tmp_path, "executions", "--json").stdout)["executions"]
    assert {e["kind"] for e in listed} == {"generation"} and len(listed) == 2
    assert out["warnings"] == []
    ledger(tmp_path, "create", "elsewhere", "--layer", str(LAYER), "-f", "3=1", "--model-id", "another-model")
    warned = ledger(tmp_path, "generate", "hi", "--profile", "elsewhere", "--max-tokens", "2", *model)
    assert "warning: profile targets model 'another-model'" in warned.stderr  # as the API warns
    ledger(tmp_path, "delete", "loud", "--delete-executions")  # its executions go with it, for a replay too
    gone = ledger(tmp_path, "replay", out["execution_id"], *model, ok=False)
    assert gone.returncode == 1 and f"execution {out['execution_id']} not found" in gone.stderr, gone.stderr


def test_sae_features_lists_top_contexts(tmp_path, tiny_model_dir, sae_dir):
    out = json.loads(ledger(tmp_path, "sae", "features", "--model", str(tiny_model_dir), "--sae", str(sae_dir),
                            "-f", "2", "-f", "5", "--top", "3", "--texts", "60", "--json").stdout)
    assert set(out) == {"2", "5"} and all(1 <= len(hits) <= 3 for hits in out.values())
    assert all({"token", "context", "activation"} <= set(hit) for hits in out.values() for hit in hits)
    refused = ledger(tmp_path, "sae", "features", "--texts", "0", ok=False)
    assert refused.returncode == 2 and "--texts" in refused.stderr


def test_a_nucleus_of_zero_is_a_usage_error_as_its_help_says(tmp_path):
    refused = ledger(tmp_path, "generate", "hi", "--top-p", "0", ok=False)
    assert refused.returncode == 2 and "--top-p" in refused.stderr and "(0, 1]" in refused.stderr


def test_generation_errors_are_one_line(tmp_path, tiny_model_dir, sae_dir):
    failed = ledger(tmp_path, "generate", "hi", "--profile", "nobody", "--model", str(tiny_model_dir),
                    "--sae", str(sae_dir), ok=False)
    assert failed.returncode == 1 and "no profile named 'nobody'" in failed.stderr and "Traceback" not in failed.stderr
    missing = ledger(tmp_path, "generate", "hi", "--model", str(tmp_path / "none"), ok=False)
    assert missing.returncode == 1 and "no model at" in missing.stderr
    (tmp_path / "empty").mkdir()
    for args, said in ((["--model", str(tmp_path / "empty")], "holds no model"),
                       (["--model", str(tiny_model_dir), "--sae", str(tmp_path / "empty")], "holds no weights")):
        unusable = ledger(tmp_path, "generate", "hi", *args, ok=False)
        assert unusable.returncode == 1 and said in unusable.stderr and "Traceback" not in unusable.stderr, (
            unusable.returncode, unusable.stderr)


def test_sae_train_writes_an_saelens_sae_that_loads_back(tmp_path, tiny_model_dir):
    from steering.sae import load_sae

    out = tmp_path / "trained"
    ledger(tmp_path, "sae", "train", "--model", str(tiny_model_dir), "--layer", "1", "--d-sae", "32", "--steps", "5",
           "--output", str(out))
    assert (out / "cfg.json").exists() and (out / "sae_weights.safetensors").exists()
    sae = load_sae(out)
    assert (sae.layer, sae.d_sae, sae.d_in) == (1, 32, 64)


def test_sae_train_refuses_an_output_it_cannot_write_and_a_width_or_step_count_of_no_use_before_training(
        tmp_path, tiny_model_dir):
    (tmp_path / "a-file").write_text("taken")
    train = ("sae", "train", "--model", str(tiny_model_dir), "--layer", "1", "--d-sae", "8", "--steps", "2")
    for output in ("/proc/no-such-place", str(tmp_path / "a-file")):
        refused = ledger(tmp_path, *train, "--output", output, ok=False)
        assert refused.returncode == 1 and refused.stderr.startswith(f"error: cannot write the SAE to {output}: ")
        assert "activations" not in refused.stderr  # before: exit 70, once the training had run
    no_layer = ledger(tmp_path, *train[:4], "--layer", "40", "--output", str(tmp_path / "sae-l40"), ok=False)
    assert no_layer.returncode == 1 and not (tmp_path / "sae-l40").exists()  # no empty SAE left to be loaded
    for option, value in (("--d-sae", "0"), ("--d-sae", "-5"), ("--d-sae", "99999999999"), ("--steps", "0")):
        refused = ledger(tmp_path, *train, option, value, "--output", str(tmp_path / "out"), ok=False)
        assert refused.returncode == 2 and option in refused.stderr  # before: an empty SAE written, or exit 70
    assert not (tmp_path / "out").exists()


def test_generate_refuses_max_tokens_the_context_cannot_hold_as_the_api_does(tmp_path, tiny_model_dir, sae_dir):
    model = ["--model", str(tiny_model_dir), "--sae", str(sae_dir)]  # the tiny model holds 512 positions
    refused = ledger(tmp_path, "generate", "hello", "--max-tokens", "4096", *model, ok=False)
    assert refused.returncode == 1 and "context" in refused.stderr, refused.stderr  # it ran, cut short, exit 0
    assert json.loads(ledger(tmp_path, "executions", "--json").stdout)["executions"] == []  # nothing was recorded
