"""Every adapter method trains a few steps through the real training path (`api.train`, what the
CLI calls), its adapter reloads with `PeftModel.from_pretrained` on the original base and changes
the outputs, and `merge` reproduces the unmerged adapter's logits."""

from __future__ import annotations

import io
import json

import pytest

pytestmark = pytest.mark.slow
METHODS = {
    "lora": ["peft=lora"],
    "dora": ["peft=dora"],
    "rslora": ["peft=rslora"],
    "pissa": ["peft=pissa"],
    "olora": ["peft=lora", "peft.init=olora"],
    "qlora": ["peft=qlora"],
    "qdora": ["peft=qdora"],
    "loftq": ["peft=qlora", "peft.init=loftq"],
}
QUANTIZED = ("qlora", "qdora", "loftq")
SHORT = ["training.num_batches=2", "training.save_interval_steps=2", "training.eval_interval_steps=2",
         "training.log_interval_steps=1", "training.micro_batch_size=4", "training.max_seq_length=64",
         "data.max_samples=24", "optim.warmup_steps=0"]
IDS = [[5, 17, 42, 99, 7, 300, 12, 64]]


@pytest.fixture(scope="module", params=list(METHODS))
def trained(request, model_cache, tmp_path_factory):
    """One short run per method, shared by the assertions below."""
    from rich.console import Console

    from peftstudio import api

    root = tmp_path_factory.mktemp(request.param)
    overrides = [*METHODS[request.param], *SHORT, f"training.output_dir={root / 'outputs'}",
                 f"training.checkpoint_dir={root / 'ckpts'}"]
    result = api.train(overrides, console=Console(file=io.StringIO()))
    assert result.final_step == 2
    return request.param, overrides, root


def _original_base():
    from transformers import AutoModelForCausalLM

    from peftstudio.model.embedded import ensure_embedded_model

    return AutoModelForCausalLM.from_pretrained(ensure_embedded_model()).eval()


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


def test_adapter_reloads_on_the_original_base_and_changes_outputs(trained):
    from peft import PeftModel

    method, _, root = trained
    config = json.loads((root / "outputs/adapter/adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["use_dora"] is (method in ("dora", "qdora"))
    assert config["use_rslora"] is (method == "rslora")
    if method in ("pissa", "olora"):
        assert config["r"] == 32 and config["init_lora_weights"] is True, "converted to a rank-2r plain LoRA"
    before = _logits(_original_base())
    after = _logits(PeftModel.from_pretrained(_original_base(), root / "outputs/adapter").eval())
    assert (after - before).abs().max() > 1e-3, "the adapter must change the outputs"


def test_merge_matches_the_unmerged_adapter(trained, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftstudio import api

    method, overrides, root = trained
    result = api.merge(root / "outputs", root / "merged")
    assert "model.safetensors" in result.files and "tokenizer.json" in result.files
    merged = _logits(AutoModelForCausalLM.from_pretrained(root / "merged").eval())
    unmerged = _logits(PeftModel.from_pretrained(_original_base(), root / "outputs/adapter").eval())
    assert (merged - unmerged).abs().max() < 1e-4
    if method in QUANTIZED:
        # What the run trained: the adapter on the 4-bit base. Merging onto the fp32 base removes
        # the quantization error, so the merged model differs from it by about that error.
        trained_model = _trained_model(overrides, root)
        trained_logits = _logits(trained_model)
        with trained_model.disable_adapter():
            quantization_error = (_logits(trained_model) - _logits(_original_base())).abs()
        difference = (merged - trained_logits).abs()
        with capsys.disabled():
            print(f"\n{method}: merged-on-fp32 vs trained-on-4-bit logits: max {difference.max():.4f}, "
                  f"mean {difference.mean():.4f}; the 4-bit base alone vs fp32: max {quantization_error.max():.4f}, "
                  f"mean {quantization_error.mean():.4f}; logit range {trained_logits.abs().max():.2f}")
        assert difference.mean() < 2 * quantization_error.mean()


def _trained_model(overrides, root):
    """The model exactly as trained: the base loaded the way the run loaded it, plus the adapter."""
    from peft import PeftModel

    from peftstudio.model.load import load_base_model, model_location, quantization_config
    from peftstudio.config.validate import load_config
    from peftstudio.plan.resolve import resolve
    from tests.conftest import CPU

    config = resolve(load_config(overrides)[0], CPU, 0.0).config
    base = load_base_model(model_location(config.model), config.model, "fp32", "sdpa", quantization_config(config.peft))
    return PeftModel.from_pretrained(base, root / "outputs/adapter").eval()


@pytest.mark.parametrize("trained", ["pissa", "olora"], indirect=True)
def test_converted_adapter_reproduces_the_trained_model(trained):
    """PiSSA / OLoRA train against a residual base; the saved adapter, converted on save,
    reproduces the trained model on the original base."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from peftstudio.model.load import attach_adapter
    from peftstudio.config.validate import load_config

    method, overrides, root = trained
    from peft import PeftModel

    config, _ = load_config(overrides)
    as_trained = attach_adapter(_original_base(), config.peft, config.seed)
    set_peft_model_state_dict(as_trained, load_file(root / "ckpts/checkpoint-2/adapter_model.safetensors"))
    converted = PeftModel.from_pretrained(_original_base(), root / "outputs/adapter")
    assert (_logits(as_trained.eval()) - _logits(converted.eval())).abs().max() < 1e-4


def test_loftq_starts_closer_to_the_full_precision_model(model_cache):
    """LoftQ's adapter starts as the low-rank part of the 4-bit quantization error, so
    4-bit base + adapter is nearer the original than the 4-bit base alone."""
    from peftstudio.model.load import attach_adapter, load_base_model, model_location, quantization_config
    from peftstudio.config.validate import load_config

    config, _ = load_config(["peft=qlora", "peft.init=loftq", "peft.compute_dtype=fp32", "peft.r=32"])
    location = model_location(config.model)
    original = _logits(_original_base())
    base = load_base_model(location, config.model, "fp32", "sdpa", quantization_config(config.peft))
    model = attach_adapter(base, config.peft, config.seed, location=location).eval()
    with model.disable_adapter():
        quantized_error = (_logits(model) - original).abs().mean()
    loftq_error = (_logits(model) - original).abs().mean()
    assert loftq_error < 0.8 * quantized_error, (loftq_error, quantized_error)


@pytest.mark.parametrize("trained", ["lora"], indirect=True)  # the CLI path is the same for every method
def test_merge_and_generate_from_the_cli(trained, tmp_path):
    """What a user types after training: merge to a directory (refusing to clobber one), and
    generate — greedy by default, the same text for the same seed when sampling."""
    from peftstudio import api
    from peftstudio.errors import UserError
    from peftstudio.export.infer import Sampling, load_run_model, run_prompts
    from tests.conftest import run_cli

    _, _, root = trained
    merged = run_cli("merge", str(root / "outputs"), "--out", str(tmp_path / "merged"), cwd=tmp_path)
    assert merged.returncode == 0 and "merged lora adapter" in merged.stdout, merged.stderr
    with pytest.raises(UserError, match="exists and is not empty"):
        api.merge(root / "outputs", tmp_path / "merged")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "plan.json").write_text((root / "outputs/plan.json").read_text())
    with pytest.raises(UserError, match="has no adapter/ yet"):
        api.merge(unfinished, tmp_path / "never")
    model, tokenizer, _ = load_run_model(root / "outputs")
    prompts = ["Reverse the word: stone"]
    greedy = [run_prompts(model, tokenizer, prompts, Sampling(max_new_tokens=8)) for _ in range(2)]
    sampled = [run_prompts(model, tokenizer, prompts, Sampling(8, temperature=1.5, seed=7)) for _ in range(2)]
    assert greedy[0] == greedy[1] and sampled[0] == sampled[1]
