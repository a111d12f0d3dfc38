"""The bundled image-text samples: small images drawn deterministically, with questions whose
answers a person checks at a glance.

- `embedded:vision-sample` (TRL style: image parts inside the user message): a 64x64 picture
  of coloured shapes; the question asks the colour, the shape, how many there are, or on which
  side one stands.
- `embedded:grid-sample` (LLaMA-Factory style: an `images` column and four `<image>`
  placeholders): four consecutive 32x32 frames of a ball moving one way; trained with
  `data.image_grid=2x2` they become one 64x64 grid, and the answer is the button that follows
  the ball as a JSON object, `{"button": "RIGHT"}` (the tutorial's task).

Both are written on first use into `CACHE/data/vision-samples-HASH/` (a JSONL file per sample
and its PNG images, paths relative to the file) and reused. Everything comes from private
`random.Random(seed)` instances, so the bytes are the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

from peftstudio.files import replace_dir
from peftstudio.settings import cache_root

VISION_SAMPLE = "embedded:vision-sample"
GRID_SAMPLE = "embedded:grid-sample"
SAMPLE_FILES = {VISION_SAMPLE: "vision_sample.jsonl", GRID_SAMPLE: "grid_sample.jsonl"}
SETTINGS = {"version": 1, "seed": 77, "vision_rows": 240, "grid_rows": 160, "size": 64, "frame": 32}

COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220),
                                             "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")
COUNT_NAMES = ("one", "two", "three", "four")
MOVES = {"RIGHT": (1, 0), "LEFT": (-1, 0), "DOWN": (0, 1), "UP": (0, -1)}


def sample_path(name: str, cache_dir: Path | None = None) -> Path:
    """The JSONL file of a bundled image sample, written first if missing."""
    root = (Path(cache_dir) if cache_dir is not None else cache_root()) / "data"
    digest = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:12]
    target = root / f"vision-samples-{digest}"
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            write_samples(staging)
            staging.chmod(0o755)
            if not target.is_dir():  # another process may have finished first: its bytes are the same
                replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / SAMPLE_FILES[name]


def write_samples(directory: Path) -> None:
    (directory / "images").mkdir()
    rng = random.Random(SETTINGS["seed"])
    rows = [_shape_row(directory, index, rng) for index in range(SETTINGS["vision_rows"])]
    _write_jsonl(directory / SAMPLE_FILES[VISION_SAMPLE], rows)
    rows = [_grid_row(directory, index, rng) for index in range(SETTINGS["grid_rows"])]
    _write_jsonl(directory / SAMPLE_FILES[GRID_SAMPLE], rows)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _draw(draw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _shape_row(directory: Path, index: int, rng: random.Random) -> dict:
    from PIL import Image, ImageDraw

    size = SETTINGS["size"]
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    task = ("colour", "shape", "count", "side")[index % 4]
    count = rng.randint(1, 4) if task == "count" else 1
    side = rng.choice(("left", "right"))
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for slot in range(count):
        if task == "count":  # one shape per quadrant, in reading order
            x, y = (slot % 2) * 32 + 6, (slot // 2) * 32 + 6
        else:
            x = rng.randint(2, 10) + (34 if side == "right" else 0)
            y = rng.randint(10, 30)
        _draw(draw, shape, (x, y, x + 20, y + 20), COLOURS[colour])
    name = f"images/shape_{index:04d}.png"
    image.save(directory / name)
    question, answer = {
        "colour": ("What colour is the shape?", colour),
        "shape": ("What shape is it?", shape),
        "count": ("How many shapes are there?", COUNT_NAMES[count - 1]),
        "side": ("Is the shape on the left or the right?", side),
    }[task]
    return {"messages": [
        {"role": "user", "content": [{"type": "image", "path": name}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]}


def _grid_row(directory: Path, index: int, rng: random.Random) -> dict:
    from PIL import Image, ImageDraw

    frame = SETTINGS["frame"]
    button = rng.choice(list(MOVES))
    dx, dy = MOVES[button]
    x, y = 16 - dx * 9 + rng.randint(-2, 2), 16 - dy * 9 + rng.randint(-2, 2)
    names = []
    for step in range(4):
        image = Image.new("RGB", (frame, frame), (20, 20, 40))
        cx, cy = x + dx * 6 * step, y + dy * 6 * step
        ImageDraw.Draw(image).ellipse((cx - 4, cy - 4, cx + 4, cy + 4), fill=(250, 250, 250))
        name = f"images/frame_{index:04d}_{step}.png"
        image.save(directory / name)
        names.append(name)
    return {"messages": [
        {"role": "user", "content": "<image><image><image><image>Which button follows the ball? Answer in JSON."},
        {"role": "assistant", "content": json.dumps({"button": button})},
    ], "images": names}


def caption_images(count: int, seed: int) -> list[tuple[object, str]]:
    """(image, caption) pairs drawn like the shape sample, for the tiny image-text model's
    pretraining: captions state what the questions ask ("two blue squares", "a red circle on
    the left"), never as a question or a chat turn."""
    from PIL import Image, ImageDraw

    rng, size, pairs = random.Random(seed), SETTINGS["size"], []
    for _ in range(count):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        count_here = rng.randint(1, 4) if rng.random() < 0.5 else 1
        side = rng.choice(("left", "right"))
        image = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for slot in range(count_here):
            if count_here > 1:
                x, y = (slot % 2) * 32 + 6, (slot // 2) * 32 + 6
            else:
                x, y = rng.randint(2, 10) + (34 if side == "right" else 0), rng.randint(10, 30)
            _draw(draw, shape, (x, y, x + 20, y + 20), COLOURS[colour])
        if count_here > 1:
            caption = f"{COUNT_NAMES[count_here - 1]} {colour} {shape}s."
        else:
            caption = f"one {colour} {shape} on the {side}."
        pairs.append((image, caption))
    return pairs
