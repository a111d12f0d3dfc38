"""A model's shape from its architecture numbers: which modules it has, how many parameters
each holds, and which of them an adapter targets.

Counts here must equal what transformers and peft report for the same model (tests build every
preset and every catalogue entry on the meta device and compare), because the memory estimate
starts from them. Module names and layouts follow the installed transformers per family:
Llama-style blocks (q/k/v/o, gate/up/down), Phi-3's fused qkv_proj and gate_up_proj,
Falcon's query_key_value and dense_h_to_4h, Mixtral's router and fused expert parameters.
Nothing is loaded: presets carry the numbers, otherwise config/known_models.py finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelArchitecture, PeftSettings, RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.config.known_models import FoundArchitecture, architecture_from_hf_config, find_architecture

__all__ = ["Linear", "architecture_of", "architecture_source", "architecture_from_hf_config", "linear_layers",
           "base_parameters", "adapter_parameters", "targeted_layers", "quantizable_weights", "quantized_layers",
           "trainable_bias_parameters", "head_dim", "is_gemma3", "uses_dora", "layout_known"]

# Families whose block layout is modelled here; any other model_type is counted as a Llama block.
LLAMA_STYLE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")
KNOWN_LAYOUTS = LLAMA_STYLE + ("phi3", "falcon", "mixtral")


@dataclass(frozen=True)
class Linear:
    """One linear layer kind of a decoder block (or the output head)."""

    name: str
    in_features: int
    out_features: int
    has_bias: bool
    per_model: int  # how many the model has (num_layers for block layers, × experts for MoE, 1 for lm_head)
    reads: str = ""  # the tensor it reads; adapters reading the same one can share its saved copy
    is_module: bool = True  # an nn.Linear (bitsandbytes quantizes it); False: a parameter peft adapts directly
    rank_factor: int = 1  # peft gives a fused expert parameter r × the projections fused into it
    selected_by: tuple[str, ...] = ()  # target_modules names that select it (all needed); () means its name
    per_token: int | None = None  # how many of them one token passes through (MoE routes to a few); None: per_model

    @property
    def weight_count(self) -> int:
        return self.in_features * self.out_features

    @property
    def names(self) -> tuple[str, ...]:
        return self.selected_by or (self.name,)


def architecture_of(config: RunConfig) -> ModelArchitecture:
    """The architecture numbers of the run's model: the config's own (presets carry them), else
    a local model dir's config.json, the HF cache's or peftstudio's catalogue (offline), else
    the embedded model's. Never loads weights; a UserError when none has them."""
    return _found(config).architecture


def architecture_source(config: RunConfig) -> str:
    """Where `architecture_of` read the numbers, for `plan` to say."""
    return _found(config).source


def _found(config: RunConfig) -> FoundArchitecture:
    if config.model.architecture is not None:
        return FoundArchitecture(config.model.architecture, "model.architecture in the config")
    if config.model.name_or_path == EMBEDDED_MODEL_ID:
        from peftstudio.data.embedded import TINY_ARCHITECTURE

        return FoundArchitecture(ModelArchitecture(model_type="llama", **TINY_ARCHITECTURE), "the embedded model")
    return find_architecture(config.model)


def head_dim(arch: ModelArchitecture) -> int:
    return arch.head_dim or arch.hidden_size // arch.num_heads


def is_gemma3(arch: ModelArchitecture) -> bool:
    return arch.model_type.startswith("gemma3")


def layout_known(arch: ModelArchitecture) -> bool:
    """Whether the family's module layout is modelled (else counts assume a Llama block)."""
    return arch.model_type in KNOWN_LAYOUTS


def linear_layers(arch: ModelArchitecture) -> list[Linear]:
    """Every linear layer kind of a block (attention, then MLP or experts), then the output head."""
    head = Linear("lm_head", arch.hidden_size, arch.vocab_size, False, 1, "final norm")
    return _attention_layers(arch) + _mlp_layers(arch) + [head]


def _attention_layers(arch: ModelArchitecture) -> list[Linear]:
    h, layers, bias = arch.hidden_size, arch.num_layers, arch.attention_bias
    q, kv = arch.num_heads * head_dim(arch), arch.num_kv_heads * head_dim(arch)
    if arch.model_type == "phi3":
        return [Linear("qkv_proj", h, q + 2 * kv, False, layers, "attention input"),
                Linear("o_proj", q, h, False, layers, "attention output")]
    if arch.model_type == "falcon":  # `bias` there covers every linear layer
        return [Linear("query_key_value", h, q + 2 * kv, bias, layers, "attention input"),
                Linear("dense", q, h, bias, layers, "attention output")]
    return [Linear("q_proj", h, q, bias, layers, "attention input"), Linear("k_proj", h, kv, bias, layers, "attention input"),
            Linear("v_proj", h, kv, bias, layers, "attention input"), Linear("o_proj", q, h, False, layers, "attention output")]


def _mlp_layers(arch: ModelArchitecture) -> list[Linear]:
    h, i, layers = arch.hidden_size, arch.intermediate_size, arch.num_layers
    if arch.model_type == "phi3":
        return [Linear("gate_up_proj", h, 2 * i, False, layers, "mlp input"),
                Linear("down_proj", i, h, False, layers, "mlp product")]
    if arch.model_type == "falcon":
        return [Linear("dense_h_to_4h", h, i, arch.attention_bias, layers, "mlp input"),
                Linear("dense_4h_to_h", i, h, arch.attention_bias, layers, "mlp product")]
    if arch.num_experts:
        return _expert_layers(arch)
    return [Linear("gate_proj", h, i, False, layers, "mlp input"), Linear("up_proj", h, i, False, layers, "mlp input"),
            Linear("down_proj", i, h, False, layers, "mlp product")]


def _expert_layers(arch: ModelArchitecture) -> list[Linear]:
    """Mixtral in transformers 5: a router (`gate`, a parameter) and every expert's w1/w3 fused
    into one `experts.gate_up_proj` parameter, w2 into `experts.down_proj`. bitsandbytes
    quantizes none of them (they are not nn.Linear); peft adapts them as parameters under their
    transformers 4 names (gate, w1+w3 together, w2), the fused one at rank 2r."""
    h, i, layers, experts = arch.hidden_size, arch.intermediate_size, arch.num_layers, arch.num_experts
    routed = layers * arch.num_experts_per_token
    return [Linear("gate", h, experts, False, layers, "mlp input", is_module=False),
            Linear("experts.gate_up_proj", h, 2 * i, False, layers * experts, "mlp input", is_module=False,
                   rank_factor=2, selected_by=("w1", "w3"), per_token=routed),
            Linear("experts.down_proj", i, h, False, layers * experts, "mlp product", is_module=False,
                   selected_by=("w2",), per_token=routed)]


def norm_parameters(arch: ModelArchitecture) -> int:
    """Norm weights: RMSNorm (a weight) or Falcon's LayerNorm (weight and bias) — two per
    Llama-style block, four in Gemma 2 and 3, plus per-head q/k norms in Gemma 3 and Qwen3 —
    and the final one."""
    width = 2 * arch.hidden_size if arch.model_type == "falcon" else arch.hidden_size
    default_norms = 4 if arch.model_type in ("gemma2", "gemma3", "gemma3_text") else 2
    per_block = (arch.norms_per_block if arch.norms_per_block is not None else default_norms) * width
    if arch.model_type in ("gemma3", "gemma3_text", "qwen3"):
        per_block += 2 * head_dim(arch)
    return per_block * arch.num_layers + width


def embedding_parameters(arch: ModelArchitecture) -> int:
    return arch.vocab_size * arch.hidden_size


def base_parameters(arch: ModelArchitecture) -> int:
    """Parameters of the base model as `model.num_parameters()` counts them (tied head counted once)."""
    blocks = sum(layer.per_model * (layer.weight_count + layer.has_bias * layer.out_features)
                 for layer in linear_layers(arch) if layer.name != "lm_head")
    head = 0 if arch.tie_embeddings else embedding_parameters(arch)
    return embedding_parameters(arch) + blocks + head + norm_parameters(arch)


def quantized_layers(arch: ModelArchitecture) -> list[Linear]:
    """The layers bitsandbytes quantizes: every nn.Linear of the blocks (the head and embeddings stay)."""
    return [layer for layer in linear_layers(arch) if layer.is_module and layer.name != "lm_head"]


def quantizable_weights(arch: ModelArchitecture) -> int:
    """Weights bitsandbytes quantizes."""
    return sum(layer.per_model * layer.weight_count for layer in quantized_layers(arch))


def targeted_layers(arch: ModelArchitecture, peft: PeftSettings) -> list[Linear]:
    """The linear layers that get an adapter; `all-linear` is every linear layer but the head
    (as peft does; for Mixtral peft adds the router and the experts)."""
    layers = linear_layers(arch)
    if peft.target_modules == "all-linear":
        return [layer for layer in layers if layer.name != "lm_head"]
    wanted = set(dict.fromkeys(name.rpartition(".")[2] for name in peft.target_modules))
    known = {name for layer in layers for name in layer.names}
    unknown = sorted(wanted - known)
    if unknown:
        raise UserError(Problem("peft.target_modules", f"{unknown} match no linear layer of this {arch.model_type} model",
                                f"use all-linear or names from {sorted(known)}"))
    chosen = []
    for layer in layers:
        present = [name for name in layer.names if name in wanted]
        if present and len(present) < len(layer.names):
            raise UserError(Problem("peft.target_modules", f"{present} without {sorted(set(layer.names) - set(present))}: "
                                    f"they are fused into one {layer.name} parameter",
                                    f"target all of {list(layer.names)} or none"))
        if present:
            chosen.append(layer)
    return chosen


def uses_dora(peft: PeftSettings) -> bool:
    return peft.use_dora or peft.method in ("dora", "qdora")


def adapter_parameters(arch: ModelArchitecture, peft: PeftSettings) -> int:
    """LoRA A and B matrices (plus DoRA's magnitude vector) of every targeted layer."""
    per_kind = [layer.per_model * (peft.r * layer.rank_factor * (layer.in_features + layer.out_features)
                                   + uses_dora(peft) * layer.out_features) for layer in targeted_layers(arch, peft)]
    return sum(per_kind)


def trainable_bias_parameters(arch: ModelArchitecture, peft: PeftSettings) -> int:
    """Biases peft leaves trainable: all of them (bias=all) or those of adapted layers (lora_only)."""
    if peft.bias == "none":
        return 0
    layers = linear_layers(arch) if peft.bias == "all" else targeted_layers(arch, peft)
    return sum(layer.per_model * layer.out_features for layer in layers if layer.has_bias)
