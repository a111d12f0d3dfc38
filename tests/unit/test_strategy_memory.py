"""Per-device memory of llama3_8b QLoRA under each strategy, against figures computed by hand
from the preset's architecture numbers (32 layers, hidden 4096, kv 1024, MLP 14336, vocab
128256, untied head), r=16 on every linear layer, bf16 compute, on 4 GPUs of 24 GiB."""

import math

import pytest

from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.memory import estimate_memory
from peftstudio.plan.pipeline import make_plan
from peftstudio.plan.strategy_memory import recommend_strategy, strategy_estimate

GIB = 2**30
LAYERS = 32
# Per block: q, o 4096x4096; k, v 4096x1024; gate, up, down 4096x14336.
BLOCK_LINEAR = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336  # 218,103,808
QUANTIZED = LAYERS * BLOCK_LINEAR
EMBEDDING = 128256 * 4096
NORMS = LAYERS * 2 * 4096 + 4096
NF4_DOUBLE_QUANT_BITS = 4 + 8 / 64 + 32 / (64 * 256)
STORED = QUANTIZED * NF4_DOUBLE_QUANT_BITS / 8 + 2 * (2 * EMBEDDING + NORMS)  # 4-bit blocks, bf16 rest
ROOT = 2 * (2 * EMBEDDING + 4096)  # embeddings, untied head, final norm in bf16
DEQUANTIZED_MLP = 2 * 4096 * 14336  # the largest layer dequantized to bf16 for its matmul
# r * (in + out) per targeted layer
LORA = LAYERS * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336))  # 41,943,040
LORA_BYTES, ADAM_BYTES = 4 * LORA, 2 * 4 * LORA  # fp32 adapter; exp_avg + exp_avg_sq


@pytest.fixture(scope="module")
def planned():
    hardware = HardwareProfile("cuda", 4, ["NVIDIA GeForce RTX 4090"] * 4, [24 * GIB] * 4, "8.9", gpu_bf16=True,
                               bitsandbytes_available=True)
    plan = make_plan(["model=llama3_8b", "peft=qlora", "training.num_processes=4", "training.distributed=ddp",
                      "training.micro_batch_size=4", "training.max_seq_length=2048"], hardware=hardware)
    return plan.config, estimate_memory(plan.config)


def test_the_one_process_model_states_are_the_hand_computed_ones(planned):
    _, estimate = planned
    parts = estimate.components
    assert parts["base weights"] == int(STORED + DEQUANTIZED_MLP)
    assert (parts["LoRA weights"], parts["gradients"], parts["optimizer states"]) == (LORA_BYTES, LORA_BYTES, ADAM_BYTES)


def test_each_strategy_places_the_model_states_as_computed_by_hand(planned):
    config, estimate = planned
    weights = int(STORED + DEQUANTIZED_MLP)
    block = (int(STORED) - ROOT) // LAYERS
    per_process = {k: v for k, v in estimate.components.items()
                   if k not in ("base weights", "LoRA weights", "gradients", "optimizer states")}

    ddp = strategy_estimate(config, estimate, "ddp", 4).components
    assert ddp["base weights"] == weights and ddp["DDP gradient buckets"] == LORA_BYTES

    zero2 = strategy_estimate(config, estimate, "deepspeed_zero2", 4).components
    assert (zero2["base weights"], zero2["gradients"], zero2["optimizer states"]) == (weights, LORA_BYTES // 4,
                                                                                      ADAM_BYTES // 4)

    fsdp = strategy_estimate(config, estimate, "fsdp", 4).components
    assert fsdp["base weights"] == math.ceil((int(STORED) - ROOT) / 4) + ROOT + DEQUANTIZED_MLP
    assert fsdp["gathered blocks"] == 2 * block
    assert (fsdp["LoRA weights"], fsdp["optimizer states"]) == (LORA_BYTES // 4, ADAM_BYTES // 4)

    zero3 = strategy_estimate(config, estimate, "deepspeed_zero3", 4)
    assert zero3.components["gathered weights"] == max(2 * block, ROOT) + DEQUANTIZED_MLP
    assert zero3.host_bytes == math.ceil(int(STORED) / 4) + LORA_BYTES // 4 + ADAM_BYTES // 4
    for strategy in (ddp, zero2, fsdp, zero3.components):
        assert {k: strategy[k] for k in per_process} == per_process, "activations stay per process"


def test_the_simplest_fitting_strategy_is_recommended_with_its_reason(planned):
    config, estimate = planned
    name, chosen, reason = recommend_strategy(config, estimate, 4, 24 * GIB)
    assert name == "ddp" and reason.startswith("ddp: ") and "fits 24.0 GiB on 4 device(s)" in reason
    ddp, fsdp = (strategy_estimate(config, estimate, s, 4).total_bytes for s in ("ddp", "fsdp"))
    name, chosen, reason = recommend_strategy(config, estimate, 4, (ddp + fsdp) // 2)
    assert name in ("deepspeed_zero2", "fsdp") and "ddp needs" in reason
    name, chosen, reason = recommend_strategy(config, estimate, 4, 1 * GIB)
    assert name is None and reason.startswith("nothing fits")
