"""Checkpoints that are visible only when complete, verified before use, and the choice of
where to resume.

The trainer writes each checkpoint into a staging directory; once every file is on disk the
run's own state (`peftstudio_state.json`) and a manifest of every file's size and sha256
(`manifest.json`) are added and the directory is renamed to `checkpoint-N` in one atomic step.
A directory named `checkpoint-N` is therefore always complete, whatever moment the process was
killed at. Rotation renames before deleting, for the same reason.

A complete checkpoint can still be damaged later (a disk error, a copy cut short, a stray
edit): resume checks it against its manifest first. One that fails is moved aside as
`checkpoint-N.corrupt` (kept for inspection, never loaded) and the next newest is tried.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peftstudio.errors import Problem, UserError
from peftstudio.files import fsync_dir, fsync_tree, replace_dir, write_json
from peftstudio.redact import secrets_known

STATE_FILE = "peftstudio_state.json"
MANIFEST_FILE = "manifest.json"
HISTORY_FILE = "metrics.jsonl"
STATE_VERSION = 1
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingProgress:
    """What the trainer's own checkpoint does not hold but an exact resume needs."""

    step: int = 0
    fingerprint: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved config, flattened
    tokens_seen: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    version: int = STATE_VERSION

    @classmethod
    def read(cls, checkpoint: Path) -> "TrainingProgress":
        try:
            data = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(Problem(str(checkpoint / STATE_FILE), f"unreadable checkpoint state ({error})",
                                    "resume from another checkpoint, or training.resume=never")) from None
        if not isinstance(data, dict):
            raise UserError(Problem(str(checkpoint / STATE_FILE), "checkpoint state is not a JSON object",
                                    "resume from another checkpoint, or training.resume=never"))
        if data.get("version") != STATE_VERSION:
            raise UserError(Problem(str(checkpoint), f"checkpoint state version {data.get('version')} is not "
                                    f"{STATE_VERSION}", "resume with the peftstudio version that wrote it, or training.resume=never"))
        return cls(**data)


@dataclass(frozen=True)
class CheckpointDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "CheckpointDir":
        return cls(Path(path).expanduser())

    def complete(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _CHECKPOINT.match(entry.name)
            if match and (entry / STATE_FILE).is_file():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def latest(self) -> Path | None:
        checkpoints = self.complete()
        return checkpoints[-1][1] if checkpoints else None

    def clean_staging(self) -> None:
        """Remove what a killed run left half-written."""
        if self.root.is_dir():
            for entry in self.root.glob(".staging-*"):
                shutil.rmtree(entry, ignore_errors=True)
            for entry in self.root.glob(".checkpoint-*.old"):
                shutil.rmtree(entry, ignore_errors=True)

    def staging_for(self, step: int) -> Path:
        """Where the checkpoint of `step` is written before it becomes visible. The name
        depends on the step only, so every process of a multi-process run writes its share
        (per-rank RNG states) into the same directory."""
        return self.root / f".staging-step-{step}"

    def new_staging(self, step: int) -> Path:
        staging = self.staging_for(step)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit(self, staged: Path, progress: TrainingProgress, history: Path | None = None) -> Path:
        """Add the run's state, its metrics history (`history`, metrics.jsonl: a run whose output
        dir is recreated from the checkpoints keeps it) and the manifest to a fully written
        checkpoint, and make it visible."""
        write_json(staged / STATE_FILE, asdict(progress), private=secrets_known())
        if history is not None and history.is_file():
            shutil.copyfile(history, staged / HISTORY_FILE)
        write_json(staged / MANIFEST_FILE, manifest_of(staged))
        fsync_tree(staged)
        final = self.root / staged.name
        replace_dir(staged, final)
        fsync_dir(self.root)
        return final

    def rotate(self, keep: int, best_step: int | None) -> None:
        """Keep the newest `keep` checkpoints, plus the best one."""
        checkpoints = self.complete()
        for step, path in checkpoints[:-keep] if keep else checkpoints:
            if step != best_step:
                trash = path.with_name(f".{path.name}.old")
                path.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)

    def remove_all(self) -> int:
        checkpoints = self.complete()
        self.rotate(0, None)
        return len(checkpoints)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """relative path → {bytes, sha256} of every file in a checkpoint (the manifest aside)."""
    return {str(path.relative_to(checkpoint)): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(checkpoint.rglob("*")) if path.is_file() and path.name != MANIFEST_FILE}


def damage(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be used (the file and the reason), or None when it checks out:
    every file of its manifest present with its size and sha256, and its state readable. A
    checkpoint written before manifests existed is checked on its state alone."""
    manifest_path = checkpoint / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            entries = [(name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in manifest.items()]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
            return f"{MANIFEST_FILE}: unreadable ({error})"
        for name, size, sha in entries:
            path = checkpoint / name
            if not path.is_file():
                return f"{name}: missing"
            if path.stat().st_size != size:
                return f"{name}: {path.stat().st_size} bytes, the manifest says {size} (truncated or overwritten)"
            if _sha256(path) != sha:
                return f"{name}: sha256 differs from the manifest (the content changed after it was written)"
    try:
        TrainingProgress.read(checkpoint)
    except UserError as error:
        return f"{STATE_FILE}: {error.problems[0].message}"
    return None


def move_aside(checkpoint: Path) -> Path:
    """Rename a damaged checkpoint to `checkpoint-N.corrupt` (numbered if that exists): kept
    for inspection, never picked for resume or rotated away."""
    target, number = checkpoint.with_name(f"{checkpoint.name}.corrupt"), 1
    while target.exists():
        number += 1
        target = checkpoint.with_name(f"{checkpoint.name}.corrupt{number}")
    checkpoint.rename(target)
    return target


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old → new` for settings that differ from the checkpoint's (resume itself aside)."""
    # cpu_threads=auto is measured again by each plan (the machine's load of the moment): a
    # resumed run that picks another count has not changed what it trains.
    ignored = {"training.resume", "training.cpu_threads"}
    return [f"{key}: {saved.get(key)!r} → {current.get(key)!r}" for key in sorted(set(saved) | set(current))
            if key not in ignored and saved.get(key) != current.get(key)]


def choose_resume(checkpoints: CheckpointDir, resume: str, fingerprint: str, identity: dict[str, Any],
                  report: Callable[[str], None] = lambda message: None) -> Path | None:
    """The checkpoint to resume from (None: start fresh), refusing another run's checkpoints.
    Cleans what a killed run left half-written and, with resume=never, deletes the checkpoints;
    a damaged checkpoint is moved aside (`report` says which, why, and where it went)."""
    checkpoints.clean_staging()
    if resume == "never":
        checkpoints.remove_all()
        return None
    return resume_target(checkpoints, resume, fingerprint, identity, move_damaged=True, report=report)


def resume_target(checkpoints: CheckpointDir, resume: str, fingerprint: str, identity: dict[str, Any],
                  move_damaged: bool = False, report: Callable[[str], None] = lambda message: None) -> Path | None:
    """What `choose_resume` would pick; without `move_damaged` it touches nothing (a launcher
    checks it before starting processes, and the other ranks follow rank 0's choice with it)."""
    if resume == "never":
        return None
    target = _newest_sound(checkpoints, move_damaged, report) if resume == "auto" else Path(resume).expanduser()
    if target is None:
        return None
    if not (target / STATE_FILE).is_file():
        raise UserError(Problem("training.resume", f"{target} is not a complete peftstudio checkpoint",
                                "point it at a checkpoint-N directory that holds peftstudio_state.json"))
    reason = damage(target) if resume != "auto" else None
    if reason is not None:
        raise UserError(Problem("training.resume", f"{target} is damaged: {reason}",
                                "resume from another checkpoint (training.resume=auto picks the newest sound "
                                "one), or start over with training.resume=never"))
    saved = TrainingProgress.read(target)
    if saved.fingerprint != fingerprint:
        changed = [part for part in identity if identity[part] != saved.identity.get(part)]
        raise UserError(Problem(
            "training.checkpoint_dir",
            f"{checkpoints.root} holds checkpoints of another run (its {', '.join(changed) or 'identity'} differ"
            f"{'s' if len(changed) == 1 else ''}; fingerprint {saved.fingerprint} vs this run's {fingerprint})",
            "start fresh with training.resume=never (deletes those checkpoints), or choose another "
            "training.checkpoint_dir",
        ))
    return target


def _newest_sound(checkpoints: CheckpointDir, move_damaged: bool, report: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that passes `damage`; damaged ones newer than it are reported
    (and moved aside with `move_damaged`). Only damaged ones found: a user error."""
    damaged = []
    for step, path in reversed(checkpoints.complete()):
        reason = damage(path)
        if reason is None:
            return path
        damaged.append(f"{path.name}: {reason}")
        if move_damaged:
            moved = move_aside(path)
            report(f"{path} is damaged ({reason}); moved aside to {moved.name}, trying the next newest checkpoint")
        else:
            report(f"{path} is damaged ({reason}); the next newest checkpoint will be used")
    if damaged:
        raise UserError(Problem("training.checkpoint_dir", f"no usable checkpoint left in {checkpoints.root}: "
                                + "; ".join(damaged),
                                "start over with training.resume=never (the damaged checkpoints are kept as "
                                "checkpoint-N.corrupt), or restore a checkpoint from a backup"))
    return None
