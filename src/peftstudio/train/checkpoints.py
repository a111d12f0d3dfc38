"""Checkpoints that are visible only when complete, and the choice of where to resume.

The trainer writes each checkpoint into a staging directory; once every file is on disk the
run's own state (`peftstudio_state.json`) is added and the directory is renamed to
`checkpoint-N` in one atomic step. A directory named `checkpoint-N` is therefore always
complete, whatever moment the process was killed at. Rotation renames before deleting, for
the same reason.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peftstudio.errors import Problem, UserError
from peftstudio.files import fsync_dir, fsync_tree, replace_dir, write_json

STATE_FILE = "peftstudio_state.json"
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
        data = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
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

    def commit(self, staged: Path, progress: TrainingProgress) -> Path:
        """Add the run's state to a fully written checkpoint and make it visible."""
        write_json(staged / STATE_FILE, asdict(progress))
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


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old → new` for settings that differ from the checkpoint's (resume itself aside)."""
    ignored = {"training.resume"}
    return [f"{key}: {saved.get(key)!r} → {current.get(key)!r}" for key in sorted(set(saved) | set(current))
            if key not in ignored and saved.get(key) != current.get(key)]


def choose_resume(checkpoints: CheckpointDir, resume: str, fingerprint: str, identity: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (None: start fresh), refusing another run's checkpoints.
    Cleans what a killed run left half-written and, with resume=never, deletes the checkpoints."""
    checkpoints.clean_staging()
    if resume == "never":
        checkpoints.remove_all()
        return None
    return resume_target(checkpoints, resume, fingerprint, identity)


def resume_target(checkpoints: CheckpointDir, resume: str, fingerprint: str, identity: dict[str, Any]) -> Path | None:
    """What `choose_resume` would pick, touching nothing: a launcher checks it before starting
    processes, and the other ranks follow rank 0's choice with it."""
    if resume == "never":
        return None
    target = checkpoints.latest() if resume == "auto" else Path(resume).expanduser()
    if target is None:
        return None
    if not (target / STATE_FILE).is_file():
        raise UserError(Problem("training.resume", f"{target} is not a complete peftstudio checkpoint",
                                "point it at a checkpoint-N directory that holds peftstudio_state.json"))
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
