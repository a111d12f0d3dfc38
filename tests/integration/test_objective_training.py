"""DPO, KTO and GRPO trained through the real training path (`api.train`, what the CLI calls) on
the embedded model and the bundled samples: DPO learns the preferences, GRPO from an SFT
adapter raises its exact-match reward, KTO saves an adapter peft loads, GRPO logs its rewards
per function, and a DPO or GRPO run killed with SIGKILL (a real one, so that run alone is a
subprocess) resumes to the same adapter as a straight run.

Cost: every run but the killed ones is in-process, and each trained run is a module fixture
shared by the tests that read it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
COMMON = ["device=cpu", "data.validation_split=0", "data.max_samples=96", "training.micro_batch_size=8"]
DPO = ["objective=dpo", *COMMON, "training.num_batches=12", "training.log_interval_steps=3",
       "training.save_interval_steps=5", "optim.warmup_steps=2"]
GRPO = ["objective=grpo", *COMMON, "training.num_batches=4", "training.log_interval_steps=1",
        "training.save_interval_steps=2", "grpo.max_completion_length=6"]
# Resume needs no learning, only a checkpoint before the kill and a step after it: the DPO run
# killed is a short one of its own (4 steps of 4 pairs); GRPO's is the logged run above.
DPO_SHORT = ["objective=dpo", *COMMON[:3], "training.micro_batch_size=4", "training.num_batches=4",
             "training.log_interval_steps=1", "training.save_interval_steps=2", "optim.warmup_steps=0"]
# The SFT run GRPO starts from (peft.init_adapter): 30 steps of the bundled sample, where the
# tiny model answers about half of the word-task prompts right when sampling at temperature 1,
# so GRPO's groups of 4 disagree and carry an advantage (from the bare base every group scores
# 0: nothing to learn from).
SFT = ["device=cpu", "data.validation_split=0", "training.num_batches=30", "training.log_interval_steps=10"]
# run name: (overrides, step to kill at, the checkpoint the resumed run must start from, logged keys compared)
RUNS = {"dpo": DPO, "dpo_short": DPO_SHORT, "grpo": GRPO, "sft": SFT}
KILLED = {"dpo_short": (3, "checkpoint-2", ("step", "loss", "rewards/margins", "rewards/accuracies")),
          "grpo": (3, "checkpoint-2", ("step", "loss", "reward", "kl", "completions/mean_length"))}
ADAPTER = "outputs/adapter/adapter_model.safetensors"
# GRPO that learns: 8 prompts × 4 completions a step, 30 steps, answers of a few tokens.
GRPO_LEARNS = ["device=cpu", "data.validation_split=0", "training.micro_batch_size=32", "training.num_batches=30",
               "training.log_interval_steps=1", "training.save_interval_steps=100", "grpo.max_completion_length=8",
               "optim.learning_rate=0.003"]


def dirs(root: Path) -> list[str]:
    return [f"training.output_dir={root / 'outputs'}", f"training.checkpoint_dir={root / 'checkpoints'}"]


def train(root: Path, overrides: list[str]):
    """One in-process run in `root`: (its TrainResult, what it printed, plan summary included)."""
    from rich.console import Console

    from peftstudio import api
    from peftstudio.report import print_plan_summary

    out = io.StringIO()
    console = Console(file=out, width=200)
    result = api.train([*overrides, *dirs(root)], console=console, on_plan=lambda plan: print_plan_summary(console, plan))
    return result, out.getvalue()


def records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "outputs/metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(model_cache, tmp_path_factory):
    """One uninterrupted run per RUNS name, trained on first use: (root, what it printed)."""
    runs: dict[str, tuple[Path, str]] = {}

    def run(name: str) -> tuple[Path, str]:
        if name not in runs:
            root = tmp_path_factory.mktemp(name)
            runs[name] = root, train(root, RUNS[name])[1]
        return runs[name]

    return run


def test_dpo_learns_the_preferences(straight):
    root, _ = straight("dpo")
    logged = [r for r in records(root) if "rewards/accuracies" in r]
    assert logged[0]["step"] <= 3 and logged[-1]["step"] == 12
    assert logged[-1]["rewards/accuracies"] > 0.5
    assert logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]
    assert {"rewards/chosen", "rewards/rejected", "logps/chosen"} <= set(logged[-1])
    assert (root / "outputs/rewards.png").stat().st_size > 0


def test_grpo_logs_each_reward_and_the_kl(straight):
    root, printed = straight("grpo")
    assert "GRPOTrainer" in printed and "2 prompt(s) × 4 completions" in printed
    logged = records(root)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("reward", "rewards/exact_match/mean", "rewards/contains/mean", "kl", "completions/mean_length",
                "completions/clipped_ratio"):
        assert key in logged[-1], key
    assert logged[-1]["tokens_per_second"] > 0, "GRPO counts the prompt + completion tokens it trains on"
    assert (root / "checkpoints/checkpoint-2").is_dir()
    assert (root / "outputs/rewards.png").stat().st_size > 0


@pytest.mark.parametrize("name", list(KILLED))
def test_resume_after_sigkill_is_exact(name, straight, tmp_path):
    """A run killed with SIGKILL and resumed ends with the straight run's adapter and logs. For
    GRPO this is TRL #3635 (resumes restarting at step 0): here the sampler position, the RNG
    that samples the completions and the adapter all come back."""
    (kill_at, checkpoint, keys), overrides = KILLED[name], RUNS[name]
    reference, _ = straight(name)
    killed = run_cli("train", *overrides, *dirs(tmp_path), "--inject-fault", f"kill_at_step={kill_at}", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    resumed, _ = train(tmp_path, overrides)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == checkpoint
    assert (tmp_path / ADAPTER).read_bytes() == (reference / ADAPTER).read_bytes(), "adapters differ"
    assert [{k: r.get(k) for k in keys} for r in records(tmp_path)] == [{k: r.get(k) for k in keys} for r in records(reference)]


@pytest.mark.parametrize("objective,logged", [("kto", "kl"), ("orpo", "log_odds_ratio")])
def test_trains_an_adapter_peft_loads(objective, logged, model_cache, tmp_path):
    """KTO, and ORPO on trl.experimental's trainer, save an adapter peft loads on the original base."""
    _, printed = train(tmp_path, [f"objective={objective}", *COMMON, "training.num_batches=2", "training.log_interval_steps=1"])
    assert any(logged in r for r in records(tmp_path))
    assert all(r["tokens_seen"] > 0 for r in records(tmp_path) if "tokens_seen" in r), \
        "tokens counted (ORPO's batches hold chosen_/rejected_attention_mask, no attention_mask)"
    assert objective != "orpo" or "trl.experimental" in printed
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftstudio.data.embedded import embedded_model_dir

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir(model_cache))
    model = PeftModel.from_pretrained(base, tmp_path / "outputs/adapter")
    assert list(model.peft_config) == ["default"], "the reference copy TRL adds must not be saved"


def test_grpo_raises_the_exact_match_reward_from_an_sft_adapter(straight, tmp_path):
    """GRPO as a user types it after SFT: G=4 completions per prompt on the bundled word-task
    prompts, from the SFT run's adapter, with the default rewards (exact_match + 0.5 × contains).
    Over 30 steps the mean of the last 10 beats the first 10 by a margin that a flat curve's
    step-to-step noise does not reach (8 prompts a step: a 10-step mean of exact_match moves by
    about 0.05 on its own), and exact_match rises by itself, so partial credit from `contains`
    alone cannot pass. Measured: exact_match 0.53 → 0.75 → 0.85 per 10 steps, reward 0.84 →
    1.15 → 1.28; seed=1 with exact_match alone 0.55 → 0.77 → 0.88; all eight bundled tasks
    from the same adapter: +0.05, flat."""
    sft, _ = straight("sft")
    trained = run_cli("train", "objective=grpo", "data.path=embedded:word-prompts", "grpo.num_generations=4",
                      f"peft.init_adapter={sft / 'outputs'}", *GRPO_LEARNS, *dirs(tmp_path), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "embedded:word-prompts is the bundled prompts of the word tasks" in trained.stdout
    logged = [r for r in records(tmp_path) if "reward" in r]
    assert [r["step"] for r in logged] == list(range(1, 31))

    def rise(key: str) -> float:
        return (sum(r[key] for r in logged[-10:]) - sum(r[key] for r in logged[:10])) / 10

    curve = [(round(r["reward"], 2), round(r["rewards/exact_match/mean"], 2)) for r in logged]
    assert rise("rewards/exact_match/mean") >= 0.2, f"(reward, exact_match) per step: {curve}"
    assert rise("reward") >= 0.25, f"(reward, exact_match) per step: {curve}"


def test_grpo_starts_from_an_sft_adapter_which_is_its_reference(straight, tmp_path):
    """peft.init_adapter: GRPO trains on from an SFT run's adapter, and its reference is that
    adapter (a frozen copy), not the bare base: the KL of the first step, when the policy still
    is the starting adapter, is zero. (Against the bare base it would not be: the SFT adapter
    moved the model.) The saved adapter is the continued one alone."""
    from safetensors.torch import load_file

    sft, _ = straight("sft")
    grpo = tmp_path / "grpo"
    _, printed = train(grpo, ["objective=grpo", *COMMON, "training.num_batches=1", "training.log_interval_steps=1",
                              "grpo.max_completion_length=6", f"peft.init_adapter={sft / 'outputs'}"])
    assert "starts from the adapter in" in printed and "reference model is the starting adapter" in printed
    first = records(grpo)[0]
    assert first["step"] == 1 and abs(first["kl"]) < 1e-6, first
    started, trained = load_file(sft / ADAPTER), load_file(grpo / ADAPTER)
    assert set(trained) == set(started), "only the continued adapter is saved (TRL's ref copy is not)"
    # One step on from the SFT weights (no move at all when every group's rewards tie: zero advantage);
    # a fresh adapter (other random A, zero B) would be as far from them as they are large.
    moved = sum(float((trained[k] - started[k]).norm()) for k in started)
    assert moved < 0.1 * sum(float(started[k].norm()) for k in started), "GRPO did not start from the SFT adapter"
