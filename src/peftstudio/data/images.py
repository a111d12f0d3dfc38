"""Images in training records: where they are written, where they point, and whether they open.

Two record shapes carry images:
- TRL / Oumi style: a message's `content` is a list of parts, `{"type": "text", "text": ...}`
  and `{"type": "image", "path"|"url"|"base64"|"image": ...}`; each image part stands where
  it is in the conversation.
- LLaMA-Factory style: an `images` column (a list of paths, or of the dicts above) beside
  `messages` / `conversations` / instruction columns, with one `<image>` placeholder in the
  text for each image, in order.

Both become the same prepared row: text turns with `<image>` where each image stands, and an
`images` list of references. A relative path resolves against the data file's directory. Every
image is opened and fully decoded at plan time (a truncated file fails here, not at step 900),
and every problem of every record is reported at once with its file:line.

`data.image_grid: RxC` composes a record's images into one grid image (the tutorial's temporal
grid of consecutive frames): row-major, image i at row i // C, column i % C, each tile the
size of the first image (others resized to it), no gap; the record then holds one image and
its text one placeholder, however many `<image>` it had.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.errors import Problem, UserError

IMAGE_PLACEHOLDER = "<image>"
IMAGE_KEYS = ("path", "url", "base64", "image")
MAX_LISTED = 10
GRID = re.compile(r"^([1-9])x([1-9])$")
# Where images may come from while data someone uploaded is read (the studio sets it): a URL or a
# file outside this folder is refused before anything is opened or fetched.
_CONFINED_TO: ContextVar[Path | None] = ContextVar("images_confined_to", default=None)


@dataclass(frozen=True)
class ImageRef:
    """One image of a record: a local file, a URL or inline bytes (base64)."""

    kind: str  # path | url | base64
    value: str

    def describe(self) -> str:
        return self.value if self.kind != "base64" else f"base64 ({len(self.value)} characters)"


class ImageProblem(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


def has_images(values: dict[str, Any]) -> bool:
    """Whether a record carries images in either shape."""
    if values.get("images"):
        return True
    turns = values.get("messages") or values.get("conversations") or []
    return isinstance(turns, list) and any(isinstance(t, dict) and isinstance(t.get("content"), list)
                                           and any(_is_image_part(p) for p in t["content"]) for t in turns)


def _is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and (part.get("type") == "image" or (part.get("type") is None and
                                                                      any(k in part for k in IMAGE_KEYS)))


def split_images(values: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], list[ImageRef]]:
    """The record with image parts turned into `<image>` placeholders, and its images in order.
    Raises ImageProblem for a malformed part or a placeholder count that does not match."""
    values = dict(values)
    refs: list[ImageRef] = []
    for key in ("messages", "conversations"):
        if isinstance(values.get(key), list):
            values[key] = [_flatten_turn(turn, index, base_dir, refs) for index, turn in enumerate(values[key])]
    if refs and values.get("images"):
        raise ImageProblem("the record has both image parts in its messages and an `images` column",
                           "use one of the two shapes")
    if not refs:
        column = values.pop("images", None) or []
        if not isinstance(column, list):
            raise ImageProblem(f"`images` must be a list, got {type(column).__name__}", 'write "images": ["a.png", ...]')
        refs = [_reference(item, base_dir, f"images[{i}]") for i, item in enumerate(column)]
        placed = sum(text.count(IMAGE_PLACEHOLDER) for text in _texts(values))
        if placed != len(refs):
            raise ImageProblem(f"{placed} {IMAGE_PLACEHOLDER} placeholder(s) in the text but {len(refs)} image(s) in "
                               "`images`", f"write one {IMAGE_PLACEHOLDER} where each image stands, in order")
    values.pop("images", None)
    return values, refs


def _flatten_turn(turn: Any, index: int, base_dir: Path, refs: list[ImageRef]) -> Any:
    content = turn.get("content") if isinstance(turn, dict) else None
    if not isinstance(content, list):
        return turn
    pieces = []
    for number, part in enumerate(content):
        if _is_image_part(part):
            refs.append(_reference(part, base_dir, f"turn {index} part {number}"))
            pieces.append(IMAGE_PLACEHOLDER)
        elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            raise ImageProblem(f"turn {index} part {number} is neither text nor image: {str(part)[:60]!r}",
                               'write {"type": "text", "text": "..."} or {"type": "image", "path": "a.png"}')
    return {**turn, "content": "".join(_spaced(pieces))}


def _spaced(pieces: list[str]) -> list[str]:
    # Parts are separate paragraphs to the reader: an image part and the text after it join with a newline.
    out = []
    for index, piece in enumerate(pieces):
        if index and (piece == IMAGE_PLACEHOLDER or pieces[index - 1] == IMAGE_PLACEHOLDER) and piece.strip():
            out.append("\n")
        out.append(piece)
    return out


def _texts(values: dict[str, Any]) -> list[str]:
    texts = [values[k] for k in ("instruction", "input", "output", "prompt", "completion", "text")
             if isinstance(values.get(k), str)]
    for key, field in (("messages", "content"), ("conversations", "value")):
        texts += [t[field] for t in values.get(key) or [] if isinstance(t, dict) and isinstance(t.get(field), str)]
    return texts


def _reference(item: Any, base_dir: Path, label: str) -> ImageRef:
    if isinstance(item, str):
        item = {"url": item} if item.startswith(("http://", "https://", "data:")) else {"path": item}
    if not isinstance(item, dict) or not any(isinstance(item.get(k), str) for k in IMAGE_KEYS):
        raise ImageProblem(f"{label}: an image needs a path, url or base64 string, got {str(item)[:60]!r}",
                           'write {"type": "image", "path": "images/a.png"}')
    key = next(k for k in IMAGE_KEYS if isinstance(item.get(k), str))
    value = item[key]
    if key in ("path", "image") and not value.startswith(("http://", "https://", "data:")):
        path = Path(value).expanduser()
        return ImageRef("path", str(path if path.is_absolute() else (base_dir / path).resolve()))
    if key == "base64" or value.startswith("data:"):
        return ImageRef("base64", value.split(",", 1)[1] if value.startswith("data:") else value)
    return ImageRef("url", value)


def load_image(ref: ImageRef):
    """The decoded RGB image (fully read: a truncated file raises here). ImageProblem otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = _read_bytes(ref)
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            return image.convert("RGB")
    except ImageProblem:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "is truncated" if "truncated" in str(error) else f"does not decode as an image ({error})"
        raise ImageProblem(f"image {ref.describe()} {reason}", "replace the file with a complete PNG/JPEG/WebP image") \
            from None


def _read_bytes(ref: ImageRef) -> bytes:
    if ref.kind == "path":
        path = Path(ref.value)
        if not path.is_file():
            raise ImageProblem(f"image {ref.value} not found",
                               "fix the path (relative paths resolve against the data file's directory)")
        return path.read_bytes()
    if ref.kind == "base64":
        try:
            return base64.b64decode(ref.value, validate=True)
        except (binascii.Error, ValueError):
            raise ImageProblem("inline base64 image is not valid base64", "encode the image bytes as base64") from None
    from urllib.request import urlopen

    try:
        with urlopen(ref.value, timeout=30) as response:  # noqa: S310 - the user's own data
            return response.read()
    except OSError as error:
        raise ImageProblem(f"image URL {ref.value} cannot be read ({error})",
                           "download the images next to the data and use paths") from None


def parse_grid(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    match = GRID.match(spec.strip())
    if not match:
        raise UserError(Problem("data.image_grid", f"{spec!r} is not ROWSxCOLUMNS", "write e.g. data.image_grid=2x2"))
    return int(match.group(1)), int(match.group(2))


def compose_grid(images: list, rows: int, columns: int):
    """Images placed row-major into a rows x columns grid of tiles the first image's size."""
    from PIL import Image

    width, height = images[0].size
    grid = Image.new("RGB", (width * columns, height * rows), (0, 0, 0))
    for index, image in enumerate(images):
        tile = image if image.size == (width, height) else image.resize((width, height), Image.Resampling.BICUBIC)
        grid.paste(tile, ((index % columns) * width, (index // columns) * height))
    return grid


def row_images(refs: list[ImageRef], grid: tuple[int, int] | None) -> list:
    """A prepared row's images as the model sees them: decoded, composed into the grid if any."""
    images = [load_image(ref) for ref in refs]
    return [compose_grid(images, *grid)] if grid and images else images


def apply_grid(values: dict[str, Any], refs: list[ImageRef], grid: tuple[int, int]) -> dict[str, Any]:
    """The text of a gridded record: its placeholders collapsed into one, where the first stood."""
    capacity = grid[0] * grid[1]
    if len(refs) > capacity:
        raise ImageProblem(f"{len(refs)} images do not fit data.image_grid={grid[0]}x{grid[1]} ({capacity} tiles)",
                           "use a larger grid or fewer images per record")
    seen = [False]

    def collapse(text: str) -> str:
        def one(match: re.Match) -> str:
            first = not seen[0]
            seen[0] = True
            return IMAGE_PLACEHOLDER if first else ""
        return re.sub(re.escape(IMAGE_PLACEHOLDER), one, text)

    values = dict(values)
    for key in ("instruction", "input", "prompt"):
        if isinstance(values.get(key), str):
            values[key] = collapse(values[key])
    for key, field in (("messages", "content"), ("conversations", "value")):
        if isinstance(values.get(key), list):
            values[key] = [{**t, field: collapse(t[field])} if isinstance(t, dict) and isinstance(t.get(field), str)
                           else t for t in values[key]]
    return values


@contextmanager
def images_confined_to(folder: Path):
    """Within this block, data may only name images that are files inside `folder` (or inline
    bytes): the studio reads uploads this way, so an upload cannot make it open a file elsewhere on
    the machine or fetch a URL."""
    token = _CONFINED_TO.set(folder.resolve())
    try:
        yield
    finally:
        _CONFINED_TO.reset(token)


def _refuse_outside(located: list[tuple[str, list[ImageRef]]], root: Path) -> None:
    problems = [Problem(where, f"image {ref.value!r} is not a file inside the upload",
                        "zip the data file with its images and use paths relative to the data file")
                for where, refs in located for ref in refs
                if not (ref.kind == "base64" or (ref.kind == "path" and Path(ref.value).resolve().is_relative_to(root)))]
    if problems:
        raise UserError(problems[:MAX_LISTED], headline=f"{len(problems)} image(s) outside the upload"
                        if len(problems) > 1 else None)


def check_images(located: list[tuple[str, list[ImageRef]]]) -> None:
    """Open and decode every image; all problems at once, each with its record's file:line."""
    root = _CONFINED_TO.get()
    if root is not None:
        _refuse_outside(located, root)
    problems: list[Problem] = []
    bad = 0
    for where, refs in located:
        for ref in refs:
            try:
                load_image(ref)
            except ImageProblem as problem:
                bad += 1
                if len(problems) < MAX_LISTED:
                    problems.append(Problem(where, problem.message, problem.fix))
    if problems:
        raise UserError(problems, headline=f"{bad} image(s) cannot be used" if len(problems) > 1 else None)


def image_records(records: list, base_dir: Path, grid: tuple[int, int] | None) -> tuple[list, list[list[ImageRef]]]:
    """Records with their images split out (see `split_images`), every image checked; all
    problems of all records at once. Returns the text records and each one's image refs."""
    from peftstudio.data.sources import Record

    texts, refs_per_record, problems = [], [], []
    for record in records:
        try:
            values, refs = split_images(record.values, base_dir) if has_images(record.values) else (record.values, [])
            if grid and refs:
                values = apply_grid(values, refs, grid)
        except ImageProblem as problem:
            problems.append(Problem(record.where, problem.message, problem.fix))
            values, refs = record.values, []
        texts.append(Record(record.where, values))
        refs_per_record.append(refs)
    if problems:
        raise UserError(problems[:MAX_LISTED], headline=f"{len(problems)} record(s) with image problems"
                        if len(problems) > 1 else None)
    check_images([(record.where, refs) for record, refs in zip(records, refs_per_record) if refs])
    return texts, refs_per_record


def refs_to_json(refs: list[ImageRef]) -> list[dict[str, str]]:
    return [{"kind": ref.kind, "value": ref.value} for ref in refs]


def refs_from_json(items: list[dict[str, str]]) -> list[ImageRef]:
    return [ImageRef(item["kind"], item["value"]) for item in items]
