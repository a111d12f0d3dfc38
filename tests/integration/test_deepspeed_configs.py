"""The DeepSpeed configs peftstudio writes, read the way a run reads them: accelerate's
DeepSpeedPlugin turns the accelerate config's keys into a DeepSpeed config, and DeepSpeed's own
DeepSpeedConfig (its pydantic ZeRO / offload classes and its batch arithmetic) validates it.

deepspeed is installed by `make install` (DS_BUILD_OPS=0, no build isolation: its sdist imports
torch to build, and an isolated build would fetch a CUDA torch). It runs no ZeRO step here: its
CPU accelerator wants oneCCL, and peftstudio refuses deepspeed_* on CPU at plan time (tested in
tests/unit/test_distributed_checks.py)."""

import json

import pytest

from peftstudio.launch.accelerate_configs import ProcessLayout, accelerate_config

deepspeed_config = pytest.importorskip("deepspeed.runtime.config", reason="make install installs deepspeed")


def deepspeed_view(name: str, layout: ProcessLayout):
    """accelerate's DeepSpeed config for the written accelerate config, batch values filled in
    as transformers fills its "auto" entries, then parsed by DeepSpeed (one process here)."""
    from accelerate.utils import DeepSpeedPlugin

    written = accelerate_config(name, layout)["deepspeed_config"]
    plugin = DeepSpeedPlugin(**{key: value for key, value in written.items()})
    plugin.set_mixed_precision(layout.mixed_precision)
    raw = json.loads(json.dumps(plugin.deepspeed_config))
    micro_batch = 2
    raw["train_micro_batch_size_per_gpu"] = micro_batch
    raw["train_batch_size"] = micro_batch * layout.gradient_accumulation_steps
    return raw, deepspeed_config.DeepSpeedConfig(raw)


def test_zero2_config_is_valid_deepspeed_with_sharded_optimizer_and_no_offload():
    raw, parsed = deepspeed_view("deepspeed_zero2", ProcessLayout(num_processes=2, gradient_accumulation_steps=4,
                                                                   mixed_precision="bf16", max_grad_norm=0.5))
    assert parsed.zero_optimization_stage == 2
    assert parsed.zero_config.offload_optimizer is None or parsed.zero_config.offload_optimizer.device == "none"
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.gradient_clipping == 0.5 and parsed.gradient_accumulation_steps == 4


def test_zero3_config_offloads_to_cpu_and_gathers_16bit_weights_on_save():
    raw, parsed = deepspeed_view("deepspeed_zero3", ProcessLayout(num_processes=4, gradient_accumulation_steps=1,
                                                                   mixed_precision="fp16"))
    assert parsed.zero_optimization_stage == 3
    assert parsed.zero_config.offload_optimizer.device == "cpu" and parsed.zero_config.offload_param.device == "cpu"
    assert parsed.zero_config.gather_16bit_weights_on_model_save
    assert parsed.float16_config.enabled and not parsed.bfloat16_config.enabled


def test_deepspeed_rejects_what_its_schema_forbids():
    """The check above can fail: DeepSpeed's classes refuse a bad offload device."""
    raw, _ = deepspeed_view("deepspeed_zero3", ProcessLayout(num_processes=2))
    raw["zero_optimization"]["offload_optimizer"]["device"] = "gpu"
    with pytest.raises(Exception, match="offload_optimizer"):
        deepspeed_config.DeepSpeedConfig(raw)
