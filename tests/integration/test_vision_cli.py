"""Image-text fine-tuning end to end through the CLI on the embedded tiny image-text model
(issue 14): image problems stop `train` before any weight loads, a short run trains LoRA on
the language model only and saves an adapter PeftModel loads, `generate --image` answers, and
`plan` counts the image tokens and the vision tower."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
TINY = ["model=tiny_vision", "training.num_batches=3", "training.micro_batch_size=2", "data.max_samples=12",
        "data.validation_split=0.25", "training.save_interval_steps=2", "training.eval_interval_steps=3",
        "training.log_interval_steps=1", "training.precision=fp32"]  # fp32: byte counts below, exact CPU runs


@pytest.fixture(scope="module")
def vision_cache(model_cache):
    from peftstudio.model.embedded_vision import ensure_embedded_vision_model

    return ensure_embedded_vision_model()


@pytest.fixture(scope="module")
def trained(vision_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vision-run")
    result = run_cli("train", *TINY, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result


def test_image_problems_stop_train_before_loading(vision_cache, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "path": name}, {"type": "text", "text": "?"}]},
                          {"role": "assistant", "content": "x"}]} for name in ("ok.png", "gone.png", "bad.png", "ok.png")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("train", "model=tiny_vision", "data.path=d.jsonl", "data.validation_split=0", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "d.jsonl:2: image" in result.stderr and "gone.png not found" in result.stderr
    assert "d.jsonl:3: image" in result.stderr and "does not decode" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()


def test_plan_states_modality_and_counts_image_tokens_and_the_tower(trained):
    workdir, result = trained
    assert "modality  image-text" in result.stdout and "LoRA on the language model only" in result.stdout
    plan = json.loads((workdir / "outputs/plan.json").read_text())
    images = plan["data"]["images"]
    # 16 image tokens + begin/end of image + two "\n\n" on each side: 22 per image, never labels.
    assert images["image_tokens"] == 22 * images["images"] and images["image_tokens_per_image"] == 22
    assert images["text_tokens"] > 0
    components = plan["memory"]["estimate"]["components"]
    assert components["vision tower weights"] == 83520 * 4 and components["projector weights"] == 8256 * 4
    assert components["pixel tensors"] == 2 * 3 * 64 * 64 * 4


def test_adapter_targets_the_language_model_and_loads_with_peft(trained, vision_cache):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    workdir, _ = trained
    saved = load_file(workdir / "outputs/adapter/adapter_model.safetensors")
    assert saved and all("language_model" in name for name in saved), "vision tower and projector stay frozen"
    base = AutoModelForImageTextToText.from_pretrained(vision_cache)
    assert torch.count_nonzero(base.model.multi_modal_projector.mm_input_projection_weight), "not a blind model"
    model = PeftModel.from_pretrained(base, workdir / "outputs/adapter")
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(torch.count_nonzero(p) for p in trained_b)
    metrics = [json.loads(line) for line in (workdir / "outputs/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    assert sorted(p.name for p in (workdir / "checkpoints/ckpts").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


def test_generate_with_an_image(trained):
    from peftstudio.data.vision_sample import VISION_SAMPLE, sample_path

    workdir, _ = trained
    image = sample_path(VISION_SAMPLE).parent / "images" / "shape_0000.png"
    result = run_cli("generate", "outputs", "--prompt", "What colour is the shape?", "--image", str(image),
                     "--max-new-tokens", "4", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prompt   'What colour is the shape?'" in result.stdout and "adapter" in result.stdout
    missing = run_cli("generate", "outputs", "--prompt", "?", "--image", "nope.png", cwd=workdir)
    assert missing.returncode == 2 and "nope.png not found" in missing.stderr


def test_qlora_quantizes_the_language_model_only(vision_cache):
    from peftstudio.config.validate import load_config
    from peftstudio.model.load import load_base_model, quantization_config
    from peftstudio.model.vision import attach_image_text_adapter, keep_vision_unquantized

    config = load_config(["model=tiny_vision", "peft=qlora", "peft.compute_dtype=fp32"])[0]
    model = load_base_model(str(vision_cache), config.model, "fp32", "sdpa",
                            keep_vision_unquantized(quantization_config(config.peft)), "cpu", image_text=True)
    kinds = {(("vision" if "vision_tower" in n else "language"), type(m).__name__) for n, m in model.named_modules()
             if type(m).__name__ in ("Linear", "Linear4bit")}
    assert ("vision", "Linear4bit") not in kinds and ("language", "Linear4bit") in kinds
    wrapped = attach_image_text_adapter(model, config.peft, 0)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n for n in trainable)


@pytest.mark.parametrize("scope", ["vision", "all"])
def test_target_scope_puts_adapters_on_the_named_parts(vision_cache, scope):
    from peftstudio.config.validate import load_config
    from peftstudio.model.load import load_base_model
    from peftstudio.model.vision import attach_image_text_adapter

    config = load_config(["model=tiny_vision", f"peft.target_scope={scope}"])[0]
    model = load_base_model(str(vision_cache), config.model, "fp32", "sdpa", None, "cpu", image_text=True)
    trainable = [n for n, p in attach_image_text_adapter(model, config.peft, 0).named_parameters() if p.requires_grad]
    parts = {"vision" if "vision_tower" in n else "language" if "language_model" in n else "other" for n in trainable}
    assert parts == ({"vision"} if scope == "vision" else {"vision", "language"})
