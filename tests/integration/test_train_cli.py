"""End to end through the CLI on the embedded tiny model: what a user types, what they get."""

import json

import pytest
import yaml

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SHORT = ["training.num_batches=24", "training.save_interval_steps=8", "training.eval_interval_steps=12",
         "training.log_interval_steps=4", "training.save_total_limit=2"]


@pytest.fixture(scope="module")
def trained(model_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    result = run_cli("train", *SHORT, "logging=tensorboard", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result


def test_outputs_are_written(trained):
    workdir, result = trained
    out = workdir / "outputs"
    for name in ("config.resolved.yaml", "plan.json", "metrics.jsonl", "loss.png", "train.log",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "adapter    outputs/adapter" in result.stdout and "loss" in result.stdout
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["training"]["precision"] == "fp32" and resolved["device"] == "cpu", "no auto left"
    plan = json.loads((out / "plan.json").read_text())
    assert {"requested", "config", "decisions", "hardware", "warnings", "fingerprint"} <= set(plan)


def test_metrics_have_the_promised_fields_and_loss_falls(trained):
    workdir, _ = trained
    records = [json.loads(line) for line in (workdir / "outputs/metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    for field in ("step", "loss", "learning_rate", "grad_norm", "tokens_per_second", "step_time"):
        assert all(r[field] is not None for r in train), field
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [12, 24] and all(r["eval_perplexity"] > 1 for r in evals)
    assert train[-1]["loss"] < 0.6 * train[0]["loss"], [r["loss"] for r in train]


def test_checkpoints_rotate_and_are_complete(trained):
    workdir, _ = trained
    checkpoints = sorted((p.name for p in (workdir / "checkpoints/ckpts").iterdir() if not p.name.startswith(".")),
                         key=lambda name: int(name.split("-")[1]))
    assert checkpoints == ["checkpoint-16", "checkpoint-24"], "save_total_limit=2 keeps the newest two"
    assert all((workdir / "checkpoints/ckpts" / c / "peftstudio_state.json").is_file() for c in checkpoints)


def test_adapter_loads_changes_outputs_and_base_stays_frozen(trained, model_cache):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from peftstudio.model.embedded import ensure_embedded_model

    workdir, _ = trained
    base_dir = ensure_embedded_model()
    adapter_dir = workdir / "outputs/adapter"
    assert all("lora_" in key for key in load_file(adapter_dir / "adapter_model.safetensors")), "only adapter weights"
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    ids = torch.tensor([[5, 17, 42, 99, 7, 300]])
    with torch.no_grad():
        before = base(ids).logits
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        after = model(ids).logits
    assert not torch.allclose(before, after, atol=1e-4), "the adapter must change the outputs"
    merged_base = model.get_base_model().state_dict()
    for key, value in original.items():
        assert torch.equal(merged_base[key.replace(".weight", ".base_layer.weight")]
                           if key.replace(".weight", ".base_layer.weight") in merged_base else merged_base[key], value), key


def test_generate_shows_base_and_adapter(trained):
    workdir, _ = trained
    result = run_cli("generate", "outputs", "--count", "2", "--max-new-tokens", "12", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("adapter") == 2 and "expected" in result.stdout


def test_generate_on_a_dir_without_a_run(tmp_path):
    result = run_cli("generate", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a peftstudio run directory (no plan.json)" in result.stderr


def test_plan_json(tmp_path):
    result = run_cli("plan", "--json", "peft=dora", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["config"]["peft"]["use_dora"] is True
    assert plan["decisions"]["peft.use_dora"]["origin"] == "group"
    assert plan["decisions"]["peft.use_dora"]["reason"].startswith("peft=dora (peft/dora.yaml:")
    assert plan["decisions"]["training.precision"]["origin"] == "auto"
    assert plan["hardware"]["accelerator"] == "cpu" and isinstance(plan["warnings"], list)


def test_a_different_run_in_the_same_checkpoint_dir_is_refused(trained):
    workdir, _ = trained
    result = run_cli("train", *SHORT, "peft.r=4", "peft.alpha=8", cwd=workdir)
    assert result.returncode == 2
    assert "holds checkpoints of another run (its method differs" in result.stderr
    assert "Traceback" not in result.stderr
