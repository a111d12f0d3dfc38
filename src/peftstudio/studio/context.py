"""What one running studio holds: its settings, job store and queue, datasets, and the
translation of wizard state into a checked plan (shared by validate, estimate and launch)."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.data.images import images_confined_to
from peftstudio.errors import PeftStudioError, Problem
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.studio.datasets import DatasetStore
from peftstudio.studio.jobs import JobStore
from peftstudio.studio.runner import JobRunner
from peftstudio.studio.wizard import Translation, WizardState, translate
from peftstudio.units import MIB


@dataclass
class StudioSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("./studio-data")
    token: str | None = None
    max_upload_bytes: int = 200 * MIB
    max_running_per_device: int = 1


@dataclass
class Checked:
    """Wizard state after translation and, when that worked, planning."""

    translation: Translation
    plan: object | None = None  # RunPlan
    problems: list[Problem] = field(default_factory=list)
    environment: bool = False  # the problems are about this machine, not the choices

    @property
    def ok(self) -> bool:
        return self.plan is not None and not self.problems


class Studio:
    """The state behind the FastAPI app."""

    def __init__(self, settings: StudioSettings, runner_command=None):
        self.settings = settings
        settings.data_dir = Path(settings.data_dir).expanduser().resolve()
        self.jobs = JobStore(settings.data_dir)
        kwargs = {"command": runner_command} if runner_command else {}
        self.runner = JobRunner(self.jobs, settings.max_running_per_device, **kwargs)
        self.datasets = DatasetStore(settings.data_dir, settings.max_upload_bytes)
        self._hardware: HardwareProfile | None = None
        self._hardware_lock = threading.Lock()
        # Planning tokenizes (transformers), and transformers' lazy imports are not thread-safe:
        # requests that plan, preview or generate take turns.
        self.library_lock = threading.RLock()

    def hardware(self) -> HardwareProfile:
        """This machine, detected once (detection imports torch)."""
        with self._hardware_lock:
            if self._hardware is None:
                from peftstudio.plan.hardware import detect

                self._hardware = detect(self.settings.data_dir)
            return self._hardware

    def dataset_path(self, state: WizardState) -> Path | None:
        return self.datasets.path(state.dataset) if state.dataset else None

    def image_folder(self, state: WizardState) -> Path | None:
        """Where an upload's images must lie: a zip's folder, a single file's none (so it may name
        only inline images); None for the bundled sample."""
        if not state.dataset:
            return None
        return self.datasets.folder(state.dataset) or self.datasets.root / ".none"

    def check(self, state: WizardState, hardware: HardwareProfile | None = None) -> Checked:
        """Translate and plan `state` exactly as `peftstudio plan` would; collect every problem."""
        from peftstudio import api

        try:
            translation = translate(state, self.dataset_path(state))
        except LookupError:
            return Checked(Translation(), problems=[Problem("dataset", f"no uploaded dataset {state.dataset!r}",
                                                            "upload the file again in step 5")])
        if translation.problems:
            return Checked(translation, problems=translation.problems)
        folder = self.image_folder(state)
        try:
            with self.library_lock, images_confined_to(folder) if folder is not None else nullcontext():
                plan = api.plan(translation.overrides, hardware=hardware or self.hardware())
        except PeftStudioError as error:
            problems = [self.shown_problem(problem, state) for problem in error.problems]
            return Checked(translation, problems=problems, environment=error.exit_code == 3)
        return Checked(translation, plan=plan)

    def shown_problem(self, problem: Problem, state: WizardState) -> Problem:
        """The problem with an upload's stored path replaced by the file name the user chose."""
        if not state.dataset:
            return problem
        return Problem(self.datasets.shown(problem.where, state.dataset),
                       self.datasets.shown(problem.message, state.dataset), problem.fix)
