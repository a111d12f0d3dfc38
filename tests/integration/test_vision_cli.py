"""Image-text fine-tuning end to end on the embedded tiny image-text model (issue 14): image
problems stop `train` before any weight loads; one short run (in-process, shared by the tests
below) trains LoRA on the language model only and saves an adapter PeftModel loads; `plan`
counts the image tokens and the vision tower; `generate --image` answers; `merge` gives a
model AutoModelForImageTextToText loads that answers as base+adapter; a run SIGKILLed after a
checkpoint resumes bit-exact. Only the kill runs in a subprocess (it is what is tested)."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
# 12 rows -> 9 train, 3 held out; 4 steps of 2, a checkpoint at 2 and 4 (fp32: byte counts below, exact CPU runs)
TINY = ["model=tiny_vision", "training.num_batches=4", "training.micro_batch_size=2", "data.max_samples=12",
        "data.validation_split=0.25", "training.save_interval_steps=2", "training.eval_interval_steps=4",
        "training.log_interval_steps=1", "training.precision=fp32", "optim.warmup_steps=0"]


def overrides(root) -> list[str]:
    return [*TINY, f"training.output_dir={root / 'outputs'}", f"training.checkpoint_dir={root / 'ckpts'}"]


def train_here(root, console_file=None):
    from rich.console import Console

    from peftstudio import api
    from peftstudio.report import print_plan_summary

    console = Console(file=console_file or io.StringIO(), width=200, soft_wrap=True)  # no wrapping mid-phrase
    return api.train(overrides(root), console=console, on_plan=lambda p: print_plan_summary(console, p))


@pytest.fixture(scope="module")
def vision_cache(model_cache):
    from peftstudio.model.embedded_vision import ensure_embedded_vision_model

    return ensure_embedded_vision_model()


@pytest.fixture(scope="module")
def trained(vision_cache, tmp_path_factory):
    """The one straight run every test below reads: (run root, what `train` printed)."""
    root = tmp_path_factory.mktemp("vision-run")
    printed = io.StringIO()
    assert train_here(root, printed).final_step == 4
    return root, printed.getvalue()


def records(root) -> list[dict]:
    lines = (root / "outputs/metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in ("step", "loss", "grad_norm", "eval_loss")}
            for line in lines]


def test_image_problems_stop_train_before_loading(vision_cache, tmp_path, monkeypatch):
    from PIL import Image

    from peftstudio import api
    from peftstudio.errors import UserError
    from peftstudio.model import load

    monkeypatch.setattr(load, "load_base_model", lambda *a, **k: pytest.fail("a weight loaded"))
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "path": name}, {"type": "text", "text": "?"}]},
                          {"role": "assistant", "content": "x"}]} for name in ("ok.png", "gone.png", "bad.png", "ok.png")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as caught:
        api.train(["model=tiny_vision", f"data.path={tmp_path / 'd.jsonl'}", "data.validation_split=0",
                   f"training.output_dir={tmp_path / 'outputs'}", f"training.checkpoint_dir={tmp_path / 'ckpts'}"])
    message = str(caught.value)
    assert "d.jsonl:2: image" in message and "gone.png not found" in message
    assert "d.jsonl:3: image" in message and "does not decode" in message
    assert not (tmp_path / "outputs").exists()


def test_plan_states_modality_and_counts_image_tokens_and_the_tower(trained):
    root, printed = trained
    assert "modality  image-text" in printed and "LoRA on the language model only" in printed
    plan = json.loads((root / "outputs/plan.json").read_text())
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

    root, _ = trained
    saved = load_file(root / "outputs/adapter/adapter_model.safetensors")
    assert saved and all("language_model" in name for name in saved), "vision tower and projector stay frozen"
    base = AutoModelForImageTextToText.from_pretrained(vision_cache)
    assert torch.count_nonzero(base.model.multi_modal_projector.mm_input_projection_weight), "not a blind model"
    model = PeftModel.from_pretrained(base, root / "outputs/adapter")
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(torch.count_nonzero(p) for p in trained_b)
    assert [m["step"] for m in records(root) if "loss" in m] == [1, 2, 3, 4]
    assert sorted(p.name for p in (root / "ckpts").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_generate_with_an_image(trained):
    from peftstudio import api
    from peftstudio.data.vision_sample import VISION_SAMPLE, sample_path
    from peftstudio.errors import UserError

    root, _ = trained
    image = sample_path(VISION_SAMPLE).parent / "images" / "shape_0000.png"
    [answer] = api.generate(root / "outputs", ["What colour is the shape?"], max_new_tokens=4, images=[image])
    assert answer.prompt == "What colour is the shape?" and answer.base and answer.adapter
    with pytest.raises(UserError, match="nope.png not found"):
        api.generate(root / "outputs", ["?"], images=[root / "nope.png"])


def test_merged_model_loads_as_image_text_and_answers_as_base_plus_adapter(trained, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from peftstudio import api
    from peftstudio.data.images import ImageRef
    from peftstudio.errors import UserError
    from peftstudio.data.vision_sample import VISION_SAMPLE, sample_path
    from peftstudio.export.vision_infer import load_image_text_run, prompt_inputs

    root, _ = trained
    with pytest.raises(UserError, match="gguf export of an image-text run is not supported"):
        api.export(root / "outputs", "gguf", tmp_path / "model.gguf")
    result = api.export(root / "outputs", "merged", tmp_path / "merged")  # merged, reloaded and compared
    assert "AutoModelForImageTextToText" in result.command and "largest logit difference" in result.checks[0]
    assert {"processor_config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "merged").iterdir()}
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    AutoProcessor.from_pretrained(tmp_path / "merged")  # the merged dir carries its processor
    adapted, processor, config = load_image_text_run(root / "outputs")
    image = ImageRef("path", str(sample_path(VISION_SAMPLE).parent / "images" / "shape_0001.png"))
    inputs = prompt_inputs(processor, config, "What colour is the shape?", [image])
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}
    with torch.no_grad():
        expected = adapted.generate(**inputs, **greedy)
        with adapted.disable_adapter():
            base_logits = adapted(**inputs).logits
        assert torch.equal(merged.generate(**inputs, **greedy), expected)
        merged_logits, adapted_logits = merged(**inputs).logits, adapted(**inputs).logits
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4), "the merge must carry the adapter"


def test_sigkill_after_a_checkpoint_then_resume_equals_the_straight_run(trained, tmp_path):
    straight, _ = trained
    killed = run_cli("train", *overrides(tmp_path), "--inject-fault", "kill_at_step=3", cwd=tmp_path)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert not (tmp_path / "outputs/adapter").exists()
    printed = io.StringIO()
    assert train_here(tmp_path, printed).final_step == 4  # the same command again, in-process
    assert "resuming from" in printed.getvalue() and "checkpoint-2" in printed.getvalue()
    assert (tmp_path / "outputs/adapter/adapter_model.safetensors").read_bytes() == \
        (straight / "outputs/adapter/adapter_model.safetensors").read_bytes(), "adapters differ"
    assert records(tmp_path) == records(straight)


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


def test_find_batch_size_probes_the_most_images_at_the_longest_length(vision_cache, tmp_path):
    from PIL import Image

    from peftstudio import api

    for name, colour in (("r.png", "red"), ("g.png", "green"), ("b.png", "blue")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)

    def row(images, answer):
        parts = [{"type": "image", "path": name} for name in images]
        return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "Colours?"}]},
                             {"role": "assistant", "content": answer}]}

    rows = [row(["r.png"], "red " * 40), row(["r.png", "g.png", "b.png"], "red green blue"), row(["g.png"], "green")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = api.find_batch_size(["model=tiny_vision", f"data.path={tmp_path / 'd.jsonl'}", "data.validation_split=0",
                                  "training.micro_batch_size=2", "training.gradient_accumulation_steps=1",
                                  "training.precision=fp32"], max_size=2)
    assert "most images (3 image file(s)" in result.sample and "extended to the longest sample's" in result.sample
    # the long one-image row: 22 image tokens + 40 x "red " and the template; the probe has three images in it
    assert result.seq_len > 3 * 22 and all(p.fits for p in result.probes) and result.micro_batch_size == 2
