"""Image-text data (issue 14): image parts and images columns, plan-time image checks with
file:line, grid composition, the bundled samples, and the vision presets' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftstudio.config.schema import DataSettings
from peftstudio.data.images import IMAGE_PLACEHOLDER, compose_grid, load_image, ImageRef
from peftstudio.data.prepare import prepare_data
from peftstudio.errors import UserError


def _png(path: Path, colour=(255, 0, 0), size=(16, 16)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _chat(image_parts: list[dict], answer: str = "red") -> dict:
    return {"messages": [{"role": "user", "content": [*image_parts, {"type": "text", "text": "Which colour?"}]},
                         {"role": "assistant", "content": answer}]}


def test_image_parts_become_placeholders_with_paths_resolved_against_the_data_file(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    data_file = _write(tmp_path / "d.jsonl", [_chat([{"type": "image", "path": "imgs/a.png"}])] * 4)
    prepared = prepare_data(DataSettings(path=str(data_file), validation_split=0))
    row = prepared.train_rows[0]
    assert prepared.modality == "image-text"
    assert row["messages"][0]["content"] == f"{IMAGE_PLACEHOLDER}\nWhich colour?"
    assert row["images"] == [{"kind": "path", "value": str((tmp_path / "imgs" / "a.png").resolve())}]


def test_every_image_problem_is_reported_at_once_with_file_and_line(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"not an image at all")
    whole = (tmp_path / "good.png").read_bytes()
    _png(tmp_path / "big.png", size=(64, 64))
    (tmp_path / "truncated.png").write_bytes((tmp_path / "big.png").read_bytes()[:80])
    rows = [_chat([{"type": "image", "path": "good.png"}]),
            _chat([{"type": "image", "path": "missing.png"}]),
            _chat([{"type": "image", "path": "corrupt.png"}]),
            _chat([{"type": "image", "path": "truncated.png"}]),
            {"messages": [{"role": "user", "content": "<image> Which colour?"},
                          {"role": "assistant", "content": "red"}], "images": ["good.png", "good.png"]}]
    data_file = _write(tmp_path / "d.jsonl", rows)
    assert whole  # the good image decodes
    with pytest.raises(UserError) as caught:
        prepare_data(DataSettings(path=str(data_file), validation_split=0))
    text = caught.value.render()
    # The placeholder mismatch is a record problem (found first, all records at once) ...
    assert f"{data_file}:5" in text and "1 <image> placeholder(s) in the text but 2 image(s)" in text
    rows[4]["images"] = ["good.png"]
    _write(data_file, rows)
    with pytest.raises(UserError) as caught:
        prepare_data(DataSettings(path=str(data_file), validation_split=0))
    text = caught.value.render()
    # ... then every image is opened: missing, corrupt and truncated, each at its line.
    assert f"{data_file}:2: image {tmp_path / 'missing.png'} not found" in text
    assert f"{data_file}:3" in text and "does not decode" in text
    assert f"{data_file}:4" in text and "truncated" in text
    assert "3 image(s) cannot be used" in text


def test_grid_composition_is_row_major_and_deterministic():
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    tiles = [Image.new("RGB", (8, 8), c) for c in colours]
    tiles[3] = Image.new("RGB", (4, 4), colours[3])  # resized to the first tile's size
    grid = compose_grid(tiles, 2, 2)
    assert grid.size == (16, 16)
    assert [grid.getpixel(p) for p in ((4, 4), (12, 4), (4, 12), (12, 12))] == colours
    assert compose_grid(tiles, 2, 2).tobytes() == grid.tobytes()


def test_grid_collapses_the_placeholders_of_an_images_column(tmp_path):
    for i in range(4):
        _png(tmp_path / f"f{i}.png", colour=(i * 60, 0, 0))
    row = {"messages": [{"role": "user", "content": "<image><image><image><image>Which button?"},
                        {"role": "assistant", "content": '{"button": "A"}'}], "images": [f"f{i}.png" for i in range(4)]}
    data_file = _write(tmp_path / "d.jsonl", [row] * 2)
    prepared = prepare_data(DataSettings(path=str(data_file), validation_split=0, image_grid="2x2"))
    assert prepared.train_rows[0]["messages"][0]["content"] == "<image>Which button?"
    assert len(prepared.train_rows[0]["images"]) == 4  # composed when loaded


def test_bundled_samples_are_deterministic(tmp_path):
    from peftstudio.data.vision_sample import GRID_SAMPLE, VISION_SAMPLE, sample_path

    first = sample_path(VISION_SAMPLE, tmp_path / "a")
    second = sample_path(VISION_SAMPLE, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert (first.parent / "images" / "shape_0007.png").read_bytes() == \
        (second.parent / "images" / "shape_0007.png").read_bytes()
    grid = [json.loads(line) for line in sample_path(GRID_SAMPLE, tmp_path / "a").read_text().splitlines()]
    assert json.loads(grid[0]["messages"][1]["content"])["button"] in ("LEFT", "RIGHT", "UP", "DOWN")
    assert load_image(ImageRef("path", str(first.parent / grid[0]["images"][0]))).size == (32, 32)


def test_image_data_on_a_text_only_model_is_refused_before_loading(tmp_path):
    from peftstudio.plan.pipeline import plan_with_data
    from tests.conftest import CPU

    _png(tmp_path / "a.png")
    data_file = _write(tmp_path / "d.jsonl", [_chat([{"type": "image", "path": "a.png"}])] * 4)
    with pytest.raises(UserError) as caught:
        plan_with_data([f"data.path={data_file}", "model=qwen2_5_7b", "data.validation_split=0"], None, CPU)
    assert "is a text-only model" in caught.value.render()


@pytest.mark.parametrize("preset", ["gemma3_4b", "qwen2_5_vl_3b", "qwen2_5_vl_7b"])
def test_vision_preset_parameter_counts_equal_transformers_on_meta(preset):
    import torch
    from transformers import AutoModelForImageTextToText, Gemma3Config, Qwen2_5_VLConfig

    from peftstudio.config.validate import load_config
    from peftstudio.plan.architecture import base_parameters

    arch = load_config([f"model={preset}"])[0].model.architecture
    vision = arch.vision
    text = dict(vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                num_key_value_heads=arch.num_kv_heads, tie_word_embeddings=arch.tie_embeddings)
    if preset == "gemma3_4b":
        config = Gemma3Config(text_config={**text, "head_dim": arch.head_dim},
                              vision_config=dict(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                                                 num_hidden_layers=vision.num_layers, num_attention_heads=vision.num_heads,
                                                 patch_size=vision.patch_size, image_size=vision.image_size,
                                                 vision_use_head=False), mm_tokens_per_image=vision.tokens_per_image)
    else:
        config = Qwen2_5_VLConfig(text_config=text, tie_word_embeddings=arch.tie_embeddings, vision_config=dict(
            depth=vision.num_layers, hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
            num_heads=vision.num_heads, patch_size=vision.patch_size, out_hidden_size=arch.hidden_size))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    tower = sum(p.numel() for n, p in model.named_parameters() if ("vision_tower" in n or "visual" in n) and "merger" not in n)
    projector = sum(p.numel() for n, p in model.named_parameters() if "multi_modal_projector" in n or "merger" in n)
    assert (tower, projector) == (vision.parameters, vision.projector_parameters)
    assert base_parameters(arch) + tower + projector == model.num_parameters()


def test_siglip_count_from_numbers_equals_the_tiny_tower():
    from peftstudio.config.validate import load_config
    from peftstudio.plan.vision_memory import vision_parameters

    vision = load_config(["model=tiny_vision"])[0].model.architecture.vision
    assert vision_parameters(vision) == 83520  # what transformers builds for the tiny tower


@pytest.mark.parametrize("preset", ["tiny_vision", "gemma3_4b"])
def test_vision_flops_per_image_equal_torch_flop_counter(preset):
    """The time model's vision encoder FLOPs per image equal what torch counts for the tower's
    and projector's forward (meta device: shapes only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Gemma3Config
    from transformers.models.gemma3.modeling_gemma3 import Gemma3MultiModalProjector
    from transformers.models.siglip.modeling_siglip import SiglipVisionModel

    from peftstudio.config.validate import load_config
    from peftstudio.plan.throughput import flops_per_token
    from peftstudio.plan.vision_memory import vision_flops_per_image

    config = load_config([f"model={preset}"])[0]
    vision = config.model.architecture.vision
    gemma = Gemma3Config(text_config={"hidden_size": config.model.architecture.hidden_size},
                         vision_config=dict(hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
                                            num_hidden_layers=vision.num_layers, num_attention_heads=vision.num_heads,
                                            patch_size=vision.patch_size, image_size=vision.image_size,
                                            vision_use_head=False), mm_tokens_per_image=vision.tokens_per_image)
    gemma.vision_config._attn_implementation = "eager"
    with torch.device("meta"):
        tower, projector = SiglipVisionModel(gemma.vision_config), Gemma3MultiModalProjector(gemma)
        pixels = torch.zeros(1, 3, vision.image_size, vision.image_size)
        with FlopCounterMode(display=False) as counter:
            projector(tower(pixels).last_hidden_state)
    assert vision_flops_per_image(config) == pytest.approx(counter.get_total_flops(), rel=1e-3)
    in_tower = config.model_copy(update={"peft": config.peft.model_copy(update={"target_scope": "all"})})
    assert vision_flops_per_image(in_tower) == 2 * vision_flops_per_image(config)  # backward to the tower's inputs
    text_only, with_image = flops_per_token(config, 300), flops_per_token(config, 300, images_per_sequence=1.0)
    assert with_image.total - text_only.total == pytest.approx(vision_flops_per_image(config) / 300)


def test_text_data_on_an_image_text_model_counts_the_tower_but_no_pixels(tmp_path):
    """data.modality=auto resolves from the rows: on text rows an image-text model's tower is
    loaded (its weights count) but never run (no pixel tensors, no vision forward), in the fit,
    the auto micro-batch and the rented GPUs alike; a set value the data contradicts is refused."""
    from peftstudio.plan.cost import cost_report
    from peftstudio.plan.pipeline import plan_with_data
    from tests.conftest import H100, RTX4090

    _png(tmp_path / "a.png")
    images = _write(tmp_path / "i.jsonl", [_chat([{"type": "image", "path": "a.png"}])] * 4)
    text = _write(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "Which colour is red?"},
                                                       {"role": "assistant", "content": "red"}]}] * 4)
    common = ["model=gemma3_4b", "data.validation_split=0", "training.max_seq_length=1024"]
    plans = {name: plan_with_data([f"data.path={path}", *common, "training.micro_batch_size=4"], None, H100)[0]
             for name, path in (("images", images), ("text", text))}
    assert plans["images"].config.data.modality == "image-text" and plans["text"].config.data.modality == "text"
    assert plans["text"].decisions["data.modality"].origin == "auto"
    assert plans["text"].requested.data.modality == "auto"
    with_images, text_only = (plans[name].memory["estimate"]["components"] for name in ("images", "text"))
    assert {"pixel tensors", "vision forward (transient)"} <= set(with_images)
    assert not {"pixel tensors", "vision forward (transient)"} & set(text_only)
    assert text_only["vision tower weights"] == with_images["vision tower weights"] > 0
    saved = with_images["pixel tensors"] + with_images["vision forward (transient)"]
    assert plans["images"].memory["estimate"]["total_bytes"] - plans["text"].memory["estimate"]["total_bytes"] == saved
    assert saved > 2 * 1024**3, "gemma3_4b at micro-batch 4: GiBs of pixels and vision activations"
    rented = {name: {(o.provider, o.gpu): o.peak_memory_gib for o in cost_report(plans[name]).options} for name in plans}
    assert all(rented["text"][gpu] < peak for gpu, peak in rented["images"].items() if gpu in rented["text"])
    auto = {name: plan_with_data([f"data.path={path}", *common], None, RTX4090)[0].config.training.micro_batch_size
            for name, path in (("images", images), ("text", text))}
    assert auto["text"] >= auto["images"]
    with pytest.raises(UserError) as caught:
        plan_with_data([f"data.path={text}", *common, "data.modality=image-text"], None, H100)
    assert "data.modality: image-text, but the data is text" in caught.value.render()
