"""DPO, KTO and GRPO trained through the CLI on the embedded model and the bundled samples:
DPO learns the preferences, KTO saves an adapter peft loads, GRPO logs its rewards per
function, and a DPO run killed with SIGKILL resumes to the same adapter as a straight run."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
COMMON = ["device=cpu", "data.validation_split=0", "data.max_samples=96", "training.micro_batch_size=8"]
DPO = ["objective=dpo", *COMMON, "training.num_batches=12", "training.log_interval_steps=3",
       "training.save_interval_steps=5", "optim.warmup_steps=2"]


def records(workdir):
    return [json.loads(line) for line in (workdir / "outputs/metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dpo_run(model_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo")
    result = run_cli("train", *DPO, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def test_dpo_learns_the_preferences(dpo_run):
    logged = [r for r in records(dpo_run) if "rewards/accuracies" in r]
    assert logged[0]["step"] <= 3 and logged[-1]["step"] == 12
    assert logged[-1]["rewards/accuracies"] > 0.5
    assert logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]
    assert {"rewards/chosen", "rewards/rejected", "logps/chosen"} <= set(logged[-1])
    assert (dpo_run / "outputs/rewards.png").stat().st_size > 0


def test_dpo_resume_after_sigkill_is_exact(dpo_run, tmp_path):
    killed = run_cli("train", *DPO, "--inject-fault", "kill_at_step=7", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    resumed = run_cli("train", *DPO, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint-5" in resumed.stdout
    adapter = "outputs/adapter/adapter_model.safetensors"
    assert (tmp_path / adapter).read_bytes() == (dpo_run / adapter).read_bytes(), "adapters differ"
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies")
    assert [{k: r.get(k) for k in keys} for r in records(tmp_path)] == [{k: r.get(k) for k in keys} for r in records(dpo_run)]


def test_kto_trains_an_adapter_peft_loads(model_cache, tmp_path):
    result = run_cli("train", "objective=kto", *COMMON, "training.num_batches=4", "training.log_interval_steps=2",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any("rewards/chosen" in r or "kl" in r for r in records(tmp_path))
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftstudio.data.embedded import embedded_model_dir

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir(model_cache))
    model = PeftModel.from_pretrained(base, tmp_path / "outputs/adapter")
    assert list(model.peft_config) == ["default"], "the reference copy TRL adds must not be saved"


GRPO = ["objective=grpo", *COMMON, "training.num_batches=4", "training.log_interval_steps=1",
        "training.save_interval_steps=2", "grpo.max_completion_length=6"]


@pytest.fixture(scope="module")
def grpo_run(model_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grpo")
    result = run_cli("train", *GRPO, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "GRPOTrainer" in result.stdout and "2 prompt(s) × 4 completions" in result.stdout
    return workdir


def test_grpo_logs_each_reward_and_the_kl(grpo_run):
    logged = records(grpo_run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("reward", "rewards/exact_match/mean", "rewards/contains/mean", "kl", "completions/mean_length",
                "completions/clipped_ratio"):
        assert key in logged[-1], key
    assert (grpo_run / "checkpoints/ckpts/checkpoint-2").is_dir()
    assert (grpo_run / "outputs/rewards.png").stat().st_size > 0


def test_grpo_resume_after_sigkill_is_exact(grpo_run, tmp_path):
    """TRL #3635: GRPO resumes restarting at step 0. Here the sampler position, the RNG that
    samples the completions and the adapter all come back: the same completions, rewards and adapter."""
    killed = run_cli("train", *GRPO, "--inject-fault", "kill_at_step=3", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    resumed = run_cli("train", *GRPO, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint-2" in resumed.stdout
    adapter = "outputs/adapter/adapter_model.safetensors"
    assert (tmp_path / adapter).read_bytes() == (grpo_run / adapter).read_bytes(), "adapters differ"
    keys = ("step", "loss", "reward", "kl", "completions/mean_length")
    assert [{k: r.get(k) for k in keys} for r in records(tmp_path)] == [{k: r.get(k) for k in keys} for r in records(grpo_run)]
