"""The memory estimator: components that move with the right levers. The activation terms
against the bytes autograd really saves: tests/integration/test_memory_calibration.py."""

from __future__ import annotations

import pytest

from peftstudio.config.validate import load_config
from peftstudio.errors import UserError
from peftstudio.plan.memory import BITS_4BIT_DOUBLE_QUANT, BITS_4BIT_SINGLE_QUANT, estimate_memory
from peftstudio.plan.resolve import resolve
from tests.conftest import GIB, H100, T4

LABELS = ["base weights", "LoRA weights", "gradients", "optimizer states", "activations", "logits and loss",
          "framework overhead"]


def estimate(*overrides: str, hardware=H100, **kwargs):
    """The estimate of the run `overrides` compose, resolved for `hardware`."""
    return estimate_memory(resolve(load_config(list(overrides))[0], hardware, None).config, **kwargs)


def test_components_are_labelled_in_order_and_sum_to_the_total():
    result = estimate("model=llama3_8b", hardware=H100)
    assert list(result.components) == LABELS
    assert result.total_bytes == sum(result.components.values())
    assert result.fits(80 * GIB) and not result.fits(result.total_bytes - 1)


def test_bf16_llama3_8b_weights_and_adamw_states():
    result = estimate("model=llama3_8b", hardware=H100)
    assert result.components["base weights"] == 2 * 8_030_261_248
    assert result.components["LoRA weights"] == 4 * result.trainable_parameters
    assert result.components["optimizer states"] == 8 * result.trainable_parameters


def test_activations_grow_with_batch_and_sequence_and_shrink_with_checkpointing():
    base = ("model=llama3_8b", "training.gradient_checkpointing=off")
    sizes = [estimate(*base, micro_batch_size=b, hardware=H100).total_bytes for b in (1, 2, 4, 8)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    short, long = (estimate(*base, seq_len=s, hardware=H100).components["activations"] for s in (512, 2048))
    assert long == pytest.approx(4 * short, rel=0.05)  # linear in length with fused attention
    checkpointed = estimate("model=llama3_8b", "training.gradient_checkpointing=on", hardware=H100)
    assert checkpointed.components["activations"] < estimate(*base, hardware=H100).components["activations"] / 8


def test_eager_attention_is_quadratic_in_sequence_length():
    eager = [estimate("model=llama3_8b", "training.attention=eager", seq_len=s, hardware=H100).components["activations"]
             for s in (1024, 4096)]
    assert eager[1] > 6 * eager[0]


def test_four_bit_weights_cost_about_4_127_bits_plus_unquantized_embeddings():
    if not _has_quantization_key():
        pytest.skip("peft.quantization is not in this schema yet")
    full = estimate("model=llama3_8b", hardware=H100)
    embeddings = 2 * 2 * 128256 * 4096  # input embedding and output head, bf16
    quantized_weights = 8_030_261_248 - embeddings // 2 - 4096 * 65  # all but embeddings, head and norms
    for overrides, bits in ((["peft=qlora"], BITS_4BIT_DOUBLE_QUANT), (["peft.quantization=nf4"], BITS_4BIT_SINGLE_QUANT)):
        quantized = estimate("model=llama3_8b", *overrides, hardware=H100)
        # 4.127-bit (4.5 without double quantization) linear weights plus the bf16 embedding, head
        # and norms, and one MLP weight dequantized to bf16 for the matmul at hand
        assert quantized.components["base weights"] == pytest.approx(
            embeddings + 4096 * 65 * 2 + quantized_weights * bits / 8 + 2 * 4096 * 14336, rel=1e-6)
        assert quantized.components["base weights"] < full.components["base weights"] / 2.5
    assert BITS_4BIT_DOUBLE_QUANT == pytest.approx(4.127, abs=0.001)


def _has_quantization_key() -> bool:
    from peftstudio.config.schema import PeftSettings

    return "quantization" in PeftSettings.model_fields


def test_optimizers_have_their_own_state_sizes():
    adamw = estimate("model=llama3_8b", hardware=H100).components["optimizer states"]
    adafactor = estimate("model=llama3_8b", "optim=adafactor", hardware=H100).components["optimizer states"]
    sgd = estimate("model=llama3_8b", "optim.name=sgd", hardware=H100).components["optimizer states"]
    assert sgd == 0 < adafactor < adamw / 2


def test_t4_resolves_to_fp16_and_cpu_to_fp32():
    from tests.conftest import CPU

    t4 = estimate("model=gemma3_1b", hardware=T4)
    cpu = estimate("model=gemma3_1b", hardware=CPU)
    assert cpu.components["base weights"] == 2 * t4.components["base weights"]
    assert cpu.device == "cpu" and t4.device == "cuda"


@pytest.mark.parametrize("key", ["device", "training.precision", "training.attention",
                                 "training.gradient_checkpointing", "training.micro_batch_size"])
def test_an_unresolved_config_is_refused_naming_the_key(key):
    resolved = resolve(load_config(["model=llama3_8b"])[0], H100, None).config
    section, _, name = key.rpartition(".")
    values = resolved.model_dump()
    (values[section] if section else values)[name] = "auto"
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        estimate_memory(type(resolved).model_validate(values))


def test_unknown_target_module_is_a_user_error():
    with pytest.raises(UserError, match="peft.target_modules"):
        estimate("model=llama3_8b", "peft.target_modules=[qkv_proj]")
