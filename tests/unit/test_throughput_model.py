"""The CPU time model (plan/throughput.py: cpu_step_model): its arithmetic on a fake probe, and
its operation counts against a step of a real tiny LoRA Llama trained as train trains it (the
counts are properties of transformers' and peft's code, so an upgrade that changes them fails
here rather than silently skewing the estimate). Timings are not tested: benchmarks/
throughput_model.py compares predictions with runs on a real machine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from peftstudio.config.validate import load_config
from peftstudio.plan.hardware import count_operations, probe_block_flops
from peftstudio.plan.resolve import resolve
from peftstudio.plan.throughput import cpu_operations_per_step, cpu_step_model, flops_per_token
from tests.conftest import CPU

PROBED = replace(CPU, cpu_op_us={"1": 10.0, "2": 20.0},
                 cpu_thread_ms={"fp32": {"128": {"1": 5.0, "2": 4.0}, "512": {"1": 60.0, "2": 35.0}}})


def _config(*overrides: str):
    return resolve(load_config(["training.precision=fp32", "training.cpu_threads=1", *overrides])[0], PROBED,
                   None).config


def test_step_is_operations_times_their_cost_plus_flops_at_the_probe_rate():
    config = _config("training.packing=off")  # the embedded model: width 128
    step = cpu_step_model(config, PROBED, samples=8, seq_len=32)
    operations = cpu_operations_per_step(config)
    rate = probe_block_flops(128) / 5.0e-3
    flops = 8 * 32 * flops_per_token(config, 32).total
    assert (step.operations, step.op_seconds) == (operations, pytest.approx(10e-6))
    assert step.flops == pytest.approx(flops) and step.flops_per_second == pytest.approx(rate)
    assert step.seconds == pytest.approx(operations * 10e-6 + flops / rate)
    assert step.tokens_per_second == pytest.approx(256 / step.seconds)
    assert 0 < step.efficiency < 1
    two = cpu_step_model(_config("training.packing=off", "training.cpu_threads=2"), PROBED, samples=8, seq_len=32)
    assert two.op_seconds == pytest.approx(20e-6)
    assert cpu_step_model(config, CPU, samples=8, seq_len=32) is None, "unprobed machine: no CPU step model"


def test_packing_and_dropout_add_their_operations():
    plain = cpu_operations_per_step(_config("training.packing=off", "peft.dropout=0"))
    dropout = cpu_operations_per_step(_config("training.packing=off"))
    packed = cpu_operations_per_step(_config("training.packing=on"))
    assert dropout - plain == 4 * 7 * 6  # 4 layers x 7 adapted projections x 6 operations
    assert packed - dropout == 62  # the packed row's mask, once per step


def _counted_step(precision: str, dropout: float, segments: int, layers: int = 2) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftstudio.model import fast_paths

    torch.manual_seed(0)
    bf16 = precision == "bf16"
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
    base = LlamaForCausalLM(config).to(torch.bfloat16 if bf16 else torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear"))
    fast_paths.use_masked_dropout(model)
    if bf16:
        fast_paths.keep_autocast_inputs(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    ids = torch.randint(0, 256, (1, 64))
    positions = torch.cat([torch.arange(64 // segments)] * segments).unsqueeze(0)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return count_operations(step)


@pytest.mark.parametrize("precision,dropout,segments", [("fp32", 0.0, 1), ("fp32", 0.05, 4), ("bf16", 0.05, 4)])
def test_operation_counts_match_a_counted_step(precision, dropout, segments):
    config = _config(f"training.precision={precision}", f"peft.dropout={dropout}",
                     f"training.packing={'on' if segments > 1 else 'off'}", "model.architecture.num_layers=2")
    counted = _counted_step(precision, dropout, segments)
    assert cpu_operations_per_step(config) == pytest.approx(counted, rel=0.06)

