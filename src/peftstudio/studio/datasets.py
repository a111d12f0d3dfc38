"""Uploaded datasets: streamed to disk under the data dir, checked with the CLI's own reader.

The name a browser sends is only ever displayed: the stored file is `<random id>.<kind>`,
where the kind comes from the bytes themselves (the extension is a hint, the content type is
ignored). The size limit is enforced while the bytes arrive, so an oversized upload never
fills the disk. A zip (a JSONL plus its images) is unpacked into `<id>/` beside it
(studio/archives.py: nothing lands outside that folder) and the zip itself is not kept.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from peftstudio.errors import Problem, UserError
from peftstudio.files import write_json

DATASET_ID = re.compile(r"^[0-9a-f]{32}$")
KINDS = ("jsonl", "json", "csv", "parquet", "zip")


class UploadTooLarge(Exception):
    """The upload went past the size limit; nothing of it is kept."""


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    name: str  # as sent by the browser, sanitised; display only
    kind: str
    size_bytes: int
    uploaded_at: float
    data_file: str = ""  # a zip's data file, relative to its unpacked folder

    def to_dict(self) -> dict:
        return asdict(self)


def display_name(sent: str | None) -> str:
    """The last path component, without control characters, at most 120 characters."""
    text = (sent or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:120] or "upload"


def sniff_kind(head: bytes, name: str) -> str:
    """The file kind from its first bytes; the name's extension decides only between text kinds."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    if suffix in ("jsonl", "json", "csv"):
        return suffix
    return "csv" if b"," in stripped.split(b"\n", 1)[0] else "jsonl"


class DatasetStore:
    """Datasets under `DATA_DIR/datasets/`: `<id>.<kind>` plus `<id>.meta.json`."""

    def __init__(self, data_dir: Path, max_bytes: int):
        self.root = Path(data_dir) / "datasets"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    async def save(self, chunks: AsyncIterator[bytes], sent_name: str | None) -> DatasetInfo:
        """Stream an upload to disk; raises UploadTooLarge past the limit (and keeps nothing)."""
        dataset_id = secrets.token_hex(16)
        partial = self.root / f".{dataset_id}.part"
        size, head = 0, b""
        try:
            with partial.open("wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLarge(size)
                    if len(head) < 4096:
                        head += chunk[: 4096 - len(head)]
                    handle.write(chunk)
            if size == 0:
                raise UserError(Problem("upload", "the file is empty", "choose a file with records"))
            name = display_name(sent_name)
            info = DatasetInfo(dataset_id, name, sniff_kind(head, name), size, time.time())
            if info.kind == "zip":
                info = self._unpacked(partial, info)
            else:
                partial.replace(self.root / f"{dataset_id}.{info.kind}")
        finally:
            partial.unlink(missing_ok=True)
        write_json(self.root / f"{dataset_id}.meta.json", info.to_dict())
        return info

    def _unpacked(self, archive: Path, info: DatasetInfo) -> DatasetInfo:
        from dataclasses import replace

        from peftstudio.studio.archives import ArchiveTooLarge, unpack

        folder = self.root / info.id
        try:
            found = unpack(archive, folder, self.max_bytes)
        except ArchiveTooLarge as error:
            raise UploadTooLarge(error.args[0]) from None
        return replace(info, data_file=found.relative_to(folder).as_posix())

    def folder(self, dataset_id: str) -> Path | None:
        """A zip upload's unpacked folder (its images live there); None for a single file."""
        info = self.info(dataset_id)
        return self.root / info.id if info.kind == "zip" else None

    def info(self, dataset_id: str) -> DatasetInfo:
        if not DATASET_ID.match(dataset_id or ""):
            raise LookupError(dataset_id)
        meta = self.root / f"{dataset_id}.meta.json"
        if not meta.is_file():
            raise LookupError(dataset_id)
        return DatasetInfo(**json.loads(meta.read_text(encoding="utf-8")))

    def path(self, dataset_id: str) -> Path:
        info = self.info(dataset_id)
        if info.kind == "zip":
            return self.root / info.id / info.data_file
        return self.root / f"{info.id}.{info.kind}"

    def all(self) -> list[DatasetInfo]:
        found = [self.info(p.name.split(".")[0]) for p in self.root.glob("*.meta.json")]
        return sorted(found, key=lambda info: info.uploaded_at)

    def shown(self, text: str, dataset_id: str) -> str:
        """Error text with the stored path replaced by the name the user knows."""
        info = self.info(dataset_id)
        if info.kind == "zip":  # its data file and images: "frames.zip/data.jsonl:3", "frames.zip/img/a.png"
            return text.replace(str(self.root / info.id), info.name)
        return text.replace(str(self.path(dataset_id)), info.name)
