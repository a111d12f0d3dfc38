"""A zip upload (a JSONL plus its images) unpacked under the studio's data dir, never outside it.

Every member is checked before a byte is written: no absolute path, drive letter or `..`
component, no symlink, no more than MAX_MEMBERS files; the bytes written are counted as they
are written (a member's declared size can lie), and past the upload limit everything is
removed. The dataset is the archive's one data file (.jsonl, .json, .csv or .parquet; macOS
`__MACOSX/` and dot files ignored); image paths in it resolve against its own folder.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from peftstudio.errors import Problem, UserError

MAX_MEMBERS = 20000
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class ArchiveTooLarge(Exception):
    """The unpacked files passed the upload limit; nothing is kept."""


def safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for one that could land outside the folder."""
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if not cleaned or cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":") or ".." in path.parts:
        return None
    return path


def unpack(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack `archive` into `dest` (created) and return its data file; on any problem `dest`
    is removed and a UserError (or ArchiveTooLarge) says why."""
    try:
        return _unpack(archive, dest, max_bytes)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _unpack(archive: Path, dest: Path, max_bytes: int) -> Path:
    try:
        members = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise UserError(Problem("upload", f"the zip does not open: {error}", "upload a .zip made by a zip tool")) from None
    with members:
        infos = [info for info in members.infolist() if not info.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise UserError(Problem("upload", f"the zip has {len(infos):,} files (at most {MAX_MEMBERS:,})",
                                    "upload the data file and only the images it names"))
        unsafe = [info.filename for info in infos if safe_member_path(info.filename) is None
                  or stat.S_ISLNK(info.external_attr >> 16)]
        if unsafe:
            raise UserError(Problem("upload", f"the zip has entries that would land outside its folder or are links: "
                                    f"{', '.join(repr(n) for n in unsafe[:5])}", "zip the folder with relative paths"))
        dest.mkdir(parents=True)
        written = 0
        for info in infos:
            target = dest.joinpath(*safe_member_path(info.filename).parts)
            if not target.resolve().is_relative_to(dest.resolve()):
                raise UserError(Problem("upload", f"{info.filename!r} would land outside the folder", "use relative paths"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with members.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ArchiveTooLarge(written)
                    sink.write(chunk)
    return data_file(dest)


def data_file(dest: Path) -> Path:
    """The one data file in the unpacked folder."""
    found = sorted(p for p in dest.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and "__MACOSX" not in p.parts and not any(part.startswith(".") for part in p.relative_to(dest).parts))
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(dest)) for p in found[:5]) or "none"
        raise UserError(Problem("upload", f"the zip must hold exactly one data file (.jsonl, .json, .csv or .parquet); "
                                f"found {len(found)}: {listed}", "zip one data file with the images it names"))
    return found[0]
