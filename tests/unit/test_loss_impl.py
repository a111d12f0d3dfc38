"""training.loss_impl: the chunked loss (TRL's fused LM head) equals the plain one in value and
gradients, auto picks with a reason, and the estimator counts what each holds."""

from __future__ import annotations

import pytest
import torch

from peftstudio.config.validate import load_config
from peftstudio.plan.memory import estimate_memory
from peftstudio.plan.resolve import resolve
from tests.conftest import CPU, GIB, H100

pytest.importorskip("trl")


def _tiny_peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    add_fused_lm_head(model, outputs=("log_probs",))  # what SFTTrainer does before wrapping
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, lora)


def _loss_and_grads(model, inputs, fused: bool):
    model.zero_grad()
    if fused:
        outputs = model(**inputs, fused_lm_head=True)
    else:
        outputs = model(**inputs)
    outputs.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return outputs.loss.detach(), grads


def test_chunked_loss_and_gradients_match_the_plain_loss():
    model = _tiny_peft_model()
    ids = torch.randint(0, 320, (3, 17), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :5] = -100  # a masked prompt, as completion-only training has
    labels[2, 10:] = -100
    inputs = {"input_ids": ids, "labels": labels, "use_cache": False}
    plain_loss, plain_grads = _loss_and_grads(model, inputs, fused=False)
    chunked_loss, chunked_grads = _loss_and_grads(model, inputs, fused=True)
    assert chunked_loss.item() == pytest.approx(plain_loss.item(), rel=1e-5)
    assert plain_grads.keys() == chunked_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _resolved(*overrides: str, hardware=H100):
    return resolve(load_config(list(overrides))[0], hardware, None)


def test_auto_is_chunked_on_cuda_and_plain_on_a_cpu_where_the_logits_fit():
    gpu = _resolved("model=llama3_8b", hardware=H100)
    assert gpu.config.training.loss_impl == "chunked" and "Triton" in gpu.reasons["training.loss_impl"]
    cpu = _resolved(hardware=CPU)
    assert cpu.config.training.loss_impl == "plain" and "fits" in cpu.reasons["training.loss_impl"]


def test_auto_is_plain_when_the_head_carries_an_adapter():
    result = _resolved("model=llama3_8b", "peft.target_modules=[q_proj,lm_head]")
    assert result.config.training.loss_impl == "plain" and "lm_head" in result.reasons["training.loss_impl"]


def test_chunked_holds_a_tile_where_plain_holds_every_logit():
    plain = estimate_memory(_resolved("model=llama3_8b", "training.loss_impl=plain").config, micro_batch_size=8,
                            seq_len=2048).components["logits and loss"]
    chunked = estimate_memory(_resolved("model=llama3_8b", "training.loss_impl=chunked").config, micro_batch_size=8,
                              seq_len=2048).components["logits and loss"]
    assert plain > 20 * GIB  # 16k tokens × 128k vocabulary × (2 + 12) bytes
    assert chunked < plain / 10


def test_chunked_with_an_adapter_on_the_head_is_refused_before_loading():
    from peftstudio.plan.checks import check

    config = _resolved("model=llama3_8b", "training.loss_impl=chunked", "peft.target_modules=[q_proj,lm_head]").config
    problems = check(config, H100, optimizer_steps=10, validation_rows=0).errors
    assert [p.where for p in problems] == ["training.loss_impl"]


def test_the_load_peak_of_a_quantized_model_is_its_4bit_weights_plus_one_bf16_tensor():
    estimate = estimate_memory(_resolved("model=llama3_8b", "peft=qlora").config, micro_batch_size=1, seq_len=512)
    embedding = 2 * 128256 * 4096
    assert estimate.load_peak_bytes > embedding
    assert estimate.load_peak_bytes < estimate.components["base weights"] + embedding
    assert estimate.load_peak_bytes < estimate.total_bytes
