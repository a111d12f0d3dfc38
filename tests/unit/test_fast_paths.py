"""The CPU fast paths (model/fast_paths.py) compute what the library paths they replace compute:
the dropout mask's keep rate, scale, gradient and seeding; LoRA outputs and gradients under
bf16 autocast without the fp32 round trip; and the plan lists exactly the paths train applies.
"""

from __future__ import annotations

import pytest
import torch

from peftstudio.model.fast_paths import MaskedDropout, keep_autocast_inputs, use_masked_dropout


def test_masked_dropout_keeps_one_minus_p_scaled_and_passes_the_same_mask_back():
    torch.manual_seed(0)
    x = torch.randn(500, 800, requires_grad=True)
    dropout = MaskedDropout(0.05).train()
    y = dropout(x)
    kept = y != 0
    # 400k draws: the keep rate's standard deviation is 3.4e-4; 4 of them allowed.
    assert kept.float().mean().item() == pytest.approx(0.95, abs=1.4e-3)
    torch.testing.assert_close(y[kept], x[kept] * (1 / 0.95), rtol=0, atol=0)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.95, rtol=0, atol=0)
    torch.manual_seed(0)
    again = MaskedDropout(0.05).train()(torch.randn(500, 800))
    assert torch.equal(again != 0, kept), "torch.manual_seed fixes the masks"
    assert not torch.equal(dropout(x) != 0, kept), "each call draws a new mask"
    assert dropout.eval()(x) is x
    half = torch.randn(300, 300, dtype=torch.bfloat16)
    dropped = dropout.train()(half)
    # bf16: the scale is applied in fp32 arithmetic, as on the fp32 input peft used to cast to
    torch.testing.assert_close(dropped, torch.where(dropped != 0, (half.float() * (1 / 0.95)).to(torch.bfloat16), 0),
                               rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.01, 0.001, 0.3])
def test_keep_bits_draw_one_boolean_per_element_at_the_keep_rate(p):
    from peftstudio.model.fast_paths import keep_bits

    torch.manual_seed(0)
    for count in (1, 2, 3, 5, 7):  # 16-bit draws come four to a 64-bit word: no element short or over
        assert keep_bits(count, p).shape == (count,)
    kept = keep_bits(4_000_000, p).mean()
    # 4M draws: the keep rate's standard deviation is sqrt(p(1-p)/4M); 5 of them allowed
    assert kept == pytest.approx(1 - p, abs=5 * (p * (1 - p) / 4e6) ** 0.5)


def _tiny_lora(dropout: float):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                           init_lora_weights=False))


def _loss_and_grads(model, ids):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_bf16_inputs_under_autocast_give_the_same_loss_and_gradients():
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    stock = _tiny_lora(0.0)
    stock_loss, stock_grads = _loss_and_grads(stock, ids)
    fast = _tiny_lora(0.0)
    assert keep_autocast_inputs(fast) == 14 and use_masked_dropout(fast) == 0  # 7 projections x 2 blocks; p=0: nn.Identity
    fast_loss, fast_grads = _loss_and_grads(fast, ids)
    assert fast_loss.item() == stock_loss.item()
    for name, grad in stock_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=0, atol=0, msg=name)
    layer = fast.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    assert layer._cast_input_dtype(x, torch.float32).dtype == torch.float32, "outside autocast the cast stays"


def test_lora_dropout_layers_are_swapped_and_train():
    model = _tiny_lora(0.1)
    assert use_masked_dropout(model) == 14
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    loss, grads = _loss_and_grads(model, ids)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())


def test_plan_lists_the_fast_paths_train_applies():
    from dataclasses import replace

    from peftstudio.config.validate import load_config
    from peftstudio.plan.resolve import cpu_fast_paths, resolve
    from tests.conftest import CPU, H100

    config, _ = load_config(["training.precision=bf16"])
    cpu = resolve(config, CPU, 0.6).config
    assert set(cpu_fast_paths(cpu, CPU)) == {"masked_dropout", "autocast_inputs"}
    fp32_unpacked = resolve(load_config(["peft.dropout=0", "training.precision=fp32"])[0], CPU, 0.1).config
    assert cpu_fast_paths(fp32_unpacked, CPU) == {}
    assert cpu_fast_paths(resolve(config, H100, 0.6).config, H100) == {}
    # The packed-row attention follows this machine's attention probe, for packed sdpa runs only.
    faster = replace(CPU, cpu_attention_ms={"bf16": {"masked": 21.6, "per_sample": 11.8}})
    assert cpu.training.packing == "on"
    assert "packed_attention" in cpu_fast_paths(cpu, faster)
    assert "11.8 ms vs 21.6 ms" in cpu_fast_paths(cpu, faster)["packed_attention"]
    slower = replace(CPU, cpu_attention_ms={"bf16": {"masked": 10.0, "per_sample": 11.8}})
    assert "packed_attention" not in cpu_fast_paths(cpu, slower)
    unpacked = resolve(config, faster, 0.1).config
    assert unpacked.training.packing == "off" and "packed_attention" not in cpu_fast_paths(unpacked, faster)


def test_cpu_threads_follow_the_faster_measured_count_at_the_nearest_width():
    from dataclasses import replace

    from peftstudio.config.validate import load_config
    from peftstudio.plan.resolve import resolve
    from tests.conftest import CPU, H100

    loaded = {"fp32": {"128": {"1": 3.0, "2": 173.1}, "512": {"1": 30.0, "2": 17.5}}}
    config, _ = load_config(["training.precision=fp32"])  # the embedded model: width 128
    resolution = resolve(config, replace(CPU, cpu_thread_ms=loaded), None)
    assert resolution.config.training.cpu_threads == 1
    assert resolution.reasons["training.cpu_threads"].startswith(
        "probe block of width 128 in fp32, measured on this machine: 1 thread 3.0 ms, 2 threads 173.1 ms per step: "
        "the faster")
    wide, _ = load_config(["training.precision=fp32", "model.architecture.hidden_size=512",
                           "model.architecture.intermediate_size=1536", "model.architecture.head_dim=64",
                           "model.architecture.num_heads=8", "model.architecture.num_kv_heads=4"])
    assert resolve(wide, replace(CPU, cpu_thread_ms=loaded), None).config.training.cpu_threads == 2
    unmeasured = resolve(config, replace(CPU, cpu_thread_ms={}), None)
    assert unmeasured.config.training.cpu_threads == CPU.cpu_cores and "not measured" in unmeasured.reasons[
        "training.cpu_threads"]
    assert resolve(config, H100, None).config.training.cpu_threads == H100.cpu_cores
    assert resolve(load_config(["training.cpu_threads=3"])[0], CPU, None).config.training.cpu_threads == 3


def test_cpu_thread_probe_times_both_counts_and_restores_the_thread_count():
    from peftstudio.plan.hardware import THREAD_PROBE_WIDTHS, cpu_thread_probe

    before = torch.get_num_threads()
    table = cpu_thread_probe(repeats=1)
    assert torch.get_num_threads() == before
    if before == 1:
        assert table == {}
        return
    assert set(table) == {"fp32", "bf16"}
    for widths in table.values():
        assert set(widths) == {str(w) for w in THREAD_PROBE_WIDTHS}
        assert all(set(times) == {"1", str(before)} and min(times.values()) > 0 for times in widths.values())


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_packed_rows_attend_sample_by_sample_as_the_masked_call_does(dtype, tolerance):
    """A tiny Llama on one packed row of three samples (position_ids restarting): loss and
    gradients through sdpa_packed equal transformers' sdpa under the row's block-diagonal mask
    (bf16 to its rounding: the per-sample path computes in fp32), and a padded batch goes through
    transformers' own sdpa unchanged."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from unittest import mock

    from peftstudio.model import fast_paths
    from peftstudio.model.fast_paths import register_packed_sdpa, sample_bounds

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    positions = torch.cat([torch.arange(n) for n in (5, 11, 8)]).unsqueeze(0)
    assert sample_bounds(positions, 24) == [0, 5, 16, 24]
    assert sample_bounds(torch.arange(24).unsqueeze(0), 24) is None, "one sample: nothing to split"
    ids = torch.randint(0, 128, (1, 24), generator=torch.Generator().manual_seed(3))
    results = {}
    per_sample = mock.patch.object(fast_paths, "per_sample_attention", wraps=fast_paths.per_sample_attention)
    for attention in ("sdpa", register_packed_sdpa()):
        torch.manual_seed(0)
        model = LlamaForCausalLM._from_config(config, attn_implementation=attention).to(dtype)
        with per_sample as calls:
            loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
        assert calls.call_count == (2 if attention == "sdpa_packed" else 0), "one call per block, packed only"
        loss.backward()
        results[attention] = loss.detach().float(), model.model.layers[0].self_attn.q_proj.weight.grad.float()
        batch = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(4))
        results[attention + " batch"] = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits.detach()
    (stock_loss, stock_grad), (fast_loss, fast_grad) = results["sdpa"], results["sdpa_packed"]
    torch.testing.assert_close(fast_loss, stock_loss, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(fast_grad, stock_grad, rtol=tolerance, atol=tolerance * stock_grad.abs().max().item())
    assert torch.equal(results["sdpa batch"], results["sdpa_packed batch"]), "a padded batch: transformers' sdpa"
