"""The catalogue of popular hub models (config/known_models.yaml) against transformers and peft:
for every entry, the model built on the meta device from its numbers has exactly the
parameters plan/architecture.py counts, and peft's `all-linear` adapts exactly the layers (names,
shapes, counts) architecture.py says, with the same trainable count. Each entry's total is also
checked against the size its model card publishes.

Speed: each model is built one and two blocks deep (no weights, meta device) and the full
depth is reached by the per-block difference, which the formula must also reproduce; a
70B-class model at full depth would take seconds each.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest

from peftstudio.config.schema import ModelArchitecture, PeftSettings
from peftstudio.plan.architecture import (adapter_parameters, base_parameters, head_dim, quantizable_weights,
                                          targeted_layers)
from peftstudio.config.known_models import catalogue_entries, known_models

ENTRIES = catalogue_entries()
LORA = PeftSettings(r=8, target_modules="all-linear")


def hf_config(arch: ModelArchitecture):
    """The transformers config these numbers stand for."""
    from transformers import AutoConfig

    common = dict(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                  num_attention_heads=arch.num_heads, tie_word_embeddings=arch.tie_embeddings,
                  max_position_embeddings=arch.max_position_embeddings)
    if arch.model_type == "falcon":
        new_layout = arch.norms_per_block == 2
        return AutoConfig.for_model("falcon", **common, ffn_hidden_size=arch.intermediate_size, bias=arch.attention_bias,
                                    new_decoder_architecture=new_layout, num_kv_heads=arch.num_kv_heads,
                                    multi_query=arch.num_kv_heads == 1, parallel_attn=True)
    common.update(intermediate_size=arch.intermediate_size, num_key_value_heads=arch.num_kv_heads,
                  head_dim=head_dim(arch))
    if arch.model_type in ("llama", "mistral", "qwen3", "mixtral"):
        common["attention_bias"] = arch.attention_bias
    if arch.num_experts:
        common.update(num_local_experts=arch.num_experts, num_experts_per_tok=arch.num_experts_per_token)
    return AutoConfig.for_model(arch.model_type, **common)


def built(arch: ModelArchitecture):
    """(num_parameters, {(adapted module, in, out): count}, trainable) of the meta-device model;
    twins that differ only in context length are built once."""
    return _built(arch.model_dump_json(exclude={"max_position_embeddings"}))


@lru_cache(maxsize=None)
def _built(numbers: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    arch = ModelArchitecture.model_validate_json(numbers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(arch))
    total = model.num_parameters()
    with torch.device("meta"):
        wrapped = get_peft_model(model, LoraConfig(r=LORA.r, lora_alpha=16, target_modules="all-linear"),
                                 low_cpu_mem_usage=True)
    return total, adapted_layers(wrapped), wrapped.get_nb_trainable_parameters()[0]


def adapted_layers(wrapped) -> dict[tuple[str, int, int], int]:
    """Each adapted layer kind (name without the block index, in, out) and how many there are."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: dict[tuple[str, int, int], int] = {}
    for name, module in wrapped.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        key = (_kind(name, module), module.in_features, module.out_features)
        found[key] = found.get(key, 0) + 1
    return found


def _kind(name: str, module) -> str:
    """`q_proj`, `query_key_value`, ...; a parameter adapter (peft nests one per parameter of
    the experts module) as `experts.gate_up_proj`, the router's as `gate`."""
    leaf = re.sub(r"^.*\.(layers|h)\.\d+\.", "", name).replace(".base_layer", "")
    leaf = leaf.removeprefix("self_attn.").removeprefix("self_attention.").removeprefix("mlp.")
    parameter = getattr(module, "parameter_name", None)
    return f"{leaf}.{parameter}" if parameter and parameter != "weight" else leaf


def expected_layers(arch: ModelArchitecture) -> dict[tuple[str, int, int], int]:
    """What architecture.py says peft adapts: per-expert parameters appear once per block in peft."""
    expected = {}
    for layer in targeted_layers(arch, LORA):
        count = arch.num_layers if layer.name.startswith("experts.") else layer.per_model
        expected[(layer.name, layer.in_features, layer.out_features)] = count
    return expected


def shallow(arch: ModelArchitecture, layers: int) -> ModelArchitecture:
    return arch.model_copy(update={"num_layers": layers})


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.hub_id for entry in ENTRIES])
def test_counts_and_targets_equal_transformers_and_peft(entry):
    arch = entry.architecture
    one, two = shallow(arch, 1), shallow(arch, 2)
    for small in (one, two):
        total, layers, trainable = built(small)
        assert base_parameters(small) == total
        assert expected_layers(small) == layers
        assert adapter_parameters(small, LORA) == trainable
    per_block = built(two)[0] - built(one)[0]
    assert base_parameters(arch) == built(one)[0] + (arch.num_layers - 1) * per_block
    per_block_adapter = built(two)[2] - built(one)[2]
    assert adapter_parameters(arch, LORA) == built(one)[2] + (arch.num_layers - 1) * per_block_adapter


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.published], ids=[e.hub_id for e in ENTRIES if e.published])
def test_total_matches_the_published_size(entry):
    value, unit = float(entry.published[:-1]), {"M": 1e6, "B": 1e9}[entry.published[-1]]
    decimals = len(entry.published[:-1].partition(".")[2])
    assert round(base_parameters(entry.architecture) / unit, decimals) == value


def test_llama_3_1_8b_is_exact():
    # the safetensors total Meta's release states
    assert base_parameters(known_models()["meta-llama/llama-3.1-8b-instruct"].architecture) == 8_030_261_248


def test_mixtral_experts_stay_unquantized_and_adapted_as_parameters():
    arch = known_models()["mistralai/mixtral-8x7b-v0.1"].architecture
    attention = 32 * 4096 * (4096 + 1024 + 1024 + 4096)
    assert quantizable_weights(arch) == attention  # bitsandbytes replaces nn.Linear only
    names = [layer.name for layer in targeted_layers(arch, PeftSettings(target_modules=["q_proj", "w1", "w3", "w2"]))]
    assert names == ["q_proj", "experts.gate_up_proj", "experts.down_proj"]


def test_every_hub_model_preset_agrees_with_the_catalogue():
    from pathlib import Path

    from peftstudio.config.validate import load_config

    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "src/peftstudio/config/conf/model").glob("*.yaml"))
    for preset in [p for p in presets if p not in ("tiny", "tiny_vision")]:  # the embedded models are no hub models
        config, _ = load_config([f"model={preset}"])
        assert known_models()[config.model.name_or_path.lower()].architecture == config.model.architecture, preset


# One model per family beyond the presets', with a family-specific target list (Mixtral by the
# names peft maps onto its fused experts) and DoRA where peft supports it.
FAMILY_TARGETS = [("microsoft/Phi-3.5-mini-instruct", ["qkv_proj", "down_proj"], True),
                  ("tiiuae/falcon-7b", ["query_key_value", "dense_4h_to_h"], True),
                  ("tiiuae/falcon-40b", ["dense", "dense_h_to_4h"], True),
                  ("google/gemma-2-2b", ["q_proj", "v_proj", "up_proj"], True),
                  ("Qwen/Qwen3-0.6B", ["k_proj", "o_proj", "gate_proj"], True),
                  ("mistralai/Mixtral-8x7B-v0.1", ["q_proj", "gate", "w1", "w3", "w2"], False)]


@pytest.mark.parametrize(("hub_id", "targets", "dora"), FAMILY_TARGETS, ids=[f[0] for f in FAMILY_TARGETS])
def test_target_lists_and_dora_equal_peft_per_family(hub_id, targets, dora):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    arch = shallow(known_models()[hub_id.lower()].architecture, 1)
    for use_dora in (False, True) if dora else (False,):
        settings = PeftSettings(r=4, target_modules=targets, use_dora=use_dora, method="dora" if use_dora else "lora")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config(arch))
            wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=targets, use_dora=use_dora),
                                     low_cpu_mem_usage=True)
        assert adapter_parameters(arch, settings) == wrapped.get_nb_trainable_parameters()[0], (hub_id, use_dora)
