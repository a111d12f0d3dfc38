"""A model's shape from its architecture numbers: which modules it has, how many parameters
each holds, and which of them an adapter targets.

Counts here must equal what transformers and peft report for the same model (a test builds
every preset on the meta device and compares), because the memory estimate starts from them.
Nothing is loaded: presets carry the numbers, a local model dir's config.json is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelArchitecture, PeftSettings, RunConfig
from peftstudio.errors import Problem, UserError

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
BLOCK_LINEARS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS


@dataclass(frozen=True)
class Linear:
    """One linear layer kind of a decoder block (or the output head)."""

    name: str
    in_features: int
    out_features: int
    has_bias: bool
    per_model: int  # how many the model has (num_layers for block layers, 1 for lm_head)

    @property
    def weight_count(self) -> int:
        return self.in_features * self.out_features


def architecture_of(config: RunConfig) -> ModelArchitecture:
    """The architecture numbers of the run's model: the config's own (presets carry them),
    else a local model dir's config.json, else the embedded model's. Never loads weights."""
    if config.model.architecture is not None:
        return config.model.architecture
    name = config.model.name_or_path
    if name == EMBEDDED_MODEL_ID:
        from peftstudio.data.embedded import TINY_ARCHITECTURE

        return ModelArchitecture(model_type="llama", **TINY_ARCHITECTURE)
    local = Path(name).expanduser() / "config.json"
    if local.is_file():
        return architecture_from_hf_config(json.loads(local.read_text()), str(local))
    raise UserError(Problem("model.architecture", f"no architecture numbers for {name!r} (not a preset, no local config.json)",
                            "use a model preset (model=llama3_8b …), a local model directory, or set model.architecture.*"))


def architecture_from_hf_config(raw: dict, source: str = "config.json") -> ModelArchitecture:
    """Map a transformers config.json onto ModelArchitecture (multimodal configs: the text tower)."""
    text = raw.get("text_config") or raw
    try:
        heads = int(text["num_attention_heads"])
        return ModelArchitecture(
            model_type=str(text.get("model_type", raw.get("model_type", "llama"))),
            num_layers=int(text["num_hidden_layers"]),
            hidden_size=int(text["hidden_size"]),
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=text.get("head_dim"),
            intermediate_size=int(text["intermediate_size"]),
            vocab_size=int(text["vocab_size"]),
            tie_embeddings=bool(text.get("tie_word_embeddings", raw.get("tie_word_embeddings", False))),
            attention_bias=bool(text.get("attention_bias", text.get("model_type") == "qwen2")),
            max_position_embeddings=int(text.get("max_position_embeddings", 4096)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(Problem(source, f"not a decoder config peftstudio can plan: missing or bad {error}",
                                "set model.architecture.* explicitly")) from None


def head_dim(arch: ModelArchitecture) -> int:
    return arch.head_dim or arch.hidden_size // arch.num_heads


def is_gemma3(arch: ModelArchitecture) -> bool:
    return arch.model_type.startswith("gemma3")


def linear_layers(arch: ModelArchitecture) -> list[Linear]:
    """Every linear layer kind: the seven block projections, then the output head."""
    h, i, layers = arch.hidden_size, arch.intermediate_size, arch.num_layers
    q, kv = arch.num_heads * head_dim(arch), arch.num_kv_heads * head_dim(arch)
    bias = arch.attention_bias
    return [
        Linear("q_proj", h, q, bias, layers), Linear("k_proj", h, kv, bias, layers),
        Linear("v_proj", h, kv, bias, layers), Linear("o_proj", q, h, False, layers),
        Linear("gate_proj", h, i, False, layers), Linear("up_proj", h, i, False, layers),
        Linear("down_proj", i, h, False, layers), Linear("lm_head", h, arch.vocab_size, False, 1),
    ]


def norm_parameters(arch: ModelArchitecture) -> int:
    """RMSNorm weights: two per Llama-style block, four plus q/k norms per Gemma 3 block, and the final one."""
    per_block = 4 * arch.hidden_size + 2 * head_dim(arch) if is_gemma3(arch) else 2 * arch.hidden_size
    return per_block * arch.num_layers + arch.hidden_size


def embedding_parameters(arch: ModelArchitecture) -> int:
    return arch.vocab_size * arch.hidden_size


def base_parameters(arch: ModelArchitecture) -> int:
    """Parameters of the base model as `model.num_parameters()` counts them (tied head counted once)."""
    blocks = sum(layer.per_model * (layer.weight_count + layer.has_bias * layer.out_features)
                 for layer in linear_layers(arch) if layer.name != "lm_head")
    head = 0 if arch.tie_embeddings else embedding_parameters(arch)
    return embedding_parameters(arch) + blocks + head + norm_parameters(arch)


def quantizable_weights(arch: ModelArchitecture) -> int:
    """Weights bitsandbytes quantizes: every block linear layer (the head and embeddings stay)."""
    return sum(layer.per_model * layer.weight_count for layer in linear_layers(arch) if layer.name != "lm_head")


def targeted_layers(arch: ModelArchitecture, peft: PeftSettings) -> list[Linear]:
    """The linear layers that get an adapter; `all-linear` is every linear layer but the head (as peft does)."""
    layers = linear_layers(arch)
    if peft.target_modules == "all-linear":
        return [layer for layer in layers if layer.name != "lm_head"]
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in peft.target_modules if name.rpartition(".")[2] not in by_name]
    if unknown:
        raise UserError(Problem("peft.target_modules", f"{unknown} match no linear layer of this {arch.model_type} model",
                                f"use all-linear or names from {list(by_name)}"))
    return [by_name[name] for name in dict.fromkeys(n.rpartition(".")[2] for n in peft.target_modules)]


def uses_dora(peft: PeftSettings) -> bool:
    return peft.use_dora or peft.method in ("dora", "qdora")


def adapter_parameters(arch: ModelArchitecture, peft: PeftSettings) -> int:
    """LoRA A and B matrices (plus DoRA's magnitude vector) of every targeted layer."""
    per_kind = [layer.per_model * (peft.r * (layer.in_features + layer.out_features)
                                   + uses_dora(peft) * layer.out_features) for layer in targeted_layers(arch, peft)]
    return sum(per_kind)


def trainable_bias_parameters(arch: ModelArchitecture, peft: PeftSettings) -> int:
    """Biases peft leaves trainable: all of them (bias=all) or those of adapted layers (lora_only)."""
    if peft.bias == "none":
        return 0
    layers = linear_layers(arch) if peft.bias == "all" else targeted_layers(arch, peft)
    return sum(layer.per_model * layer.out_features for layer in layers if layer.has_bias)
