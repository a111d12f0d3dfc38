"""The estimator's parameter counts equal what transformers and peft report, for every shipped
model preset and every adapter method (models built on the meta device: no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftstudio.config.validate import load_config
from peftstudio.plan.architecture import architecture_of, head_dim
from peftstudio.plan.memory import estimate_memory
from peftstudio.plan.resolve import resolve
from tests.conftest import H100

CONF = Path(__file__).resolve().parents[2] / "src" / "peftstudio" / "config" / "conf"
MODEL_PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
PEFT_METHODS = sorted(p.stem for p in (CONF / "peft").glob("*.yaml"))
QUANTIZED_TWIN = {"qlora": "lora", "qdora": "dora"}


def estimate_for(overrides: list[str]):
    """The estimate of the run `overrides` compose, resolved for an H100 (counts do not depend on the machine)."""
    return estimate_memory(resolve(load_config(overrides)[0], H100, None).config)


def meta_model(arch):
    """The transformers model of `arch`, built on the meta device."""
    import torch
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                  num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                  num_key_value_heads=arch.num_kv_heads, head_dim=head_dim(arch), tie_word_embeddings=arch.tie_embeddings)
    config_class = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config,
                    "gemma3_text": Gemma3TextConfig}[arch.model_type]
    if arch.model_type == "llama":
        common["attention_bias"] = arch.attention_bias
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config_class(**common))


def peft_counts(overrides: list[str]) -> tuple[int, int, int]:
    """(base parameters, trainable, all) as transformers / peft count them for the run's model."""
    import torch
    from peft import get_peft_model

    from peftstudio.model.load import lora_config

    config, _ = load_config(overrides)
    model = meta_model(architecture_of(config))
    base = model.num_parameters()
    with torch.device("meta"):
        peft_model = get_peft_model(model, lora_config(config.peft), low_cpu_mem_usage=True)
    trainable, total = peft_model.get_nb_trainable_parameters()
    return base, trainable, total


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_counts_equal_peft_for_every_preset_at_full_depth(preset):
    base, trainable, total = peft_counts([f"model={preset}"])
    estimate = estimate_for([f"model={preset}"])
    assert (estimate.base_parameters, estimate.trainable_parameters, estimate.total_parameters) == (base, trainable, total)


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_counts_equal_peft_for_every_preset_and_method(preset):
    # Every width of the preset, two blocks deep: the method matrix stays fast, and depth is
    # covered by the full-depth test above.
    for method in PEFT_METHODS:
        overrides = [f"model={preset}", f"peft={method}", "model.architecture.num_layers=2"]
        twin = [f"model={preset}", f"peft={QUANTIZED_TWIN.get(method, method)}", "model.architecture.num_layers=2"]
        base, trainable, total = peft_counts(twin)
        estimate = estimate_for(overrides)
        assert (estimate.base_parameters, estimate.trainable_parameters, estimate.total_parameters) == \
            (base, trainable, total), f"{preset} × {method}"


@pytest.mark.parametrize("targets", ["[q_proj,v_proj]", "[q_proj,k_proj,v_proj,o_proj]", "[gate_proj,up_proj,down_proj,lm_head]"])
@pytest.mark.parametrize("preset", ["qwen2_5_7b", "gemma3_270m"])
def test_counts_equal_peft_for_target_lists_and_biases(preset, targets):
    overrides = [f"model={preset}", f"peft.target_modules={targets}", "peft.bias=lora_only", "model.architecture.num_layers=3"]
    base, trainable, total = peft_counts(overrides)
    estimate = estimate_for(overrides)
    assert (estimate.base_parameters, estimate.trainable_parameters, estimate.total_parameters) == (base, trainable, total)


def test_bias_all_trains_every_bias():
    overrides = ["model=qwen2_5_7b", "peft.target_modules=[o_proj]", "peft.bias=all", "model.architecture.num_layers=3"]
    _, trainable, _ = peft_counts(overrides)
    assert estimate_for(overrides).trainable_parameters == trainable
