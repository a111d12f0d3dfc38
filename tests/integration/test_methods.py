"""DoRA, rsLoRA and PiSSA train through the same path; PiSSA's saved adapter applies to the
original base model."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SHORT = ["training.num_batches=6", "training.save_interval_steps=6", "training.log_interval_steps=3",
         "data.max_samples=80"]


def train(workdir, *extra):
    result = run_cli("train", *SHORT, *extra, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((workdir / "outputs/adapter/adapter_config.json").read_text())


@pytest.mark.parametrize("method,flag", [("dora", "use_dora"), ("rslora", "use_rslora")])
def test_method_trains_and_saves_its_flag(model_cache, tmp_path, method, flag):
    config = train(tmp_path, f"peft={method}")
    assert config[flag] is True and config["peft_type"] == "LORA"


def test_pissa_adapter_applies_to_the_original_base(model_cache, tmp_path):
    import torch
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from peftstudio.build.embedded import ensure_embedded_model
    from peftstudio.build.model import attach_adapter
    from peftstudio.config.validate import load_config

    config = train(tmp_path, "peft=pissa")
    assert config["r"] == 32, "the conversion turns a rank-r PiSSA adapter into a rank-2r LoRA on the original base"
    base_dir = ensure_embedded_model()
    ids = torch.tensor([[5, 17, 42, 99, 7, 300, 12]])

    # The model as trained: PiSSA's residual base plus the trained adapter from the last checkpoint.
    run_config, _ = load_config(["peft=pissa"])
    trained = attach_adapter(AutoModelForCausalLM.from_pretrained(base_dir), run_config.peft, run_config.seed)
    state = load_file(tmp_path / "checkpoints/ckpts/checkpoint-6/adapter_model.safetensors")
    set_peft_model_state_dict(trained, state)
    # What a user does: the original base plus the saved adapter.
    converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "outputs/adapter")
    with torch.no_grad():
        expected = trained.eval()(ids).logits
        actual = converted.eval()(ids).logits
    assert torch.allclose(expected, actual, atol=1e-3), (expected - actual).abs().max()
