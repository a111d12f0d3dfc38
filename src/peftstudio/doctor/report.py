"""Run every doctor check and show the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftstudio.doctor.environment import check_accelerator, check_dotenv, check_tokens
from peftstudio.doctor.packages import check_packages, check_python
from peftstudio.doctor.result import Check
from peftstudio.doctor.run_checks import check_disk, check_writable, dataset_check, hyperparameter_checks
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.pipeline import survey
from peftstudio.settings import process_place


@dataclass(frozen=True)
class DoctorReport:
    checks: list[Check]

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail")}
        return {"ok": not self.failed, "counts": counts, "checks": [c.to_dict() for c in self.checks]}


def run_doctor(overrides: list[str] | None = None, config_file: Path | None = None,
               hardware: HardwareProfile | None = None, environ: dict[str, str] | None = None) -> DoctorReport:
    """Every check, none stopping the others: the planning pipeline runs in its collect-all
    mode (`plan.pipeline.survey`) and each stage's problems become checks. `hardware` (free
    disk included) and `environ` are injectable so tests can fake a full disk or missing tokens."""
    found = survey(overrides, config_file, hardware, process_place())
    checks = [check_python(), *check_packages(cuda=found.hardware.accelerator == "cuda"),
              *(Check(f"config {p.where}", "fail", p.message, p.fix) for p in found.config_problems),
              check_accelerator(found.hardware, found.requested)]
    checks += [*check_tokens(found.requested, environ), check_dotenv()]
    if found.config is not None:
        training = found.config.training
        checks += [dataset_check(found), check_writable("output_dir", training.output_dir),
                   check_writable("checkpoint_dir", training.checkpoint_dir), check_disk(found.config, found.hardware),
                   *hyperparameter_checks(found.findings)]
    return DoctorReport(checks)


STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def print_doctor(console, report: DoctorReport) -> None:
    from rich.table import Table

    table = Table(title="peftstudio doctor", header_style="bold")
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, f"[{STYLE[check.status]}]{check.status}[/]", check.detail, check.fix)
    console.print(table)
    counts = report.to_dict()["counts"]
    console.print(f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
