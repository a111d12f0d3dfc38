"""Run every doctor check and show the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftstudio.doctor.environment import check_accelerator, check_tokens
from peftstudio.doctor.packages import check_packages, check_python
from peftstudio.doctor.result import Check
from peftstudio.doctor.run_checks import check_dataset, check_disk, check_hyperparameters, check_writable
from peftstudio.errors import UserError
from peftstudio.plan.hardware import HardwareProfile


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
    """Every check, none stopping the others. `hardware` (free disk included) and `environ`
    are injectable so tests can fake a full disk or missing tokens."""
    from peftstudio.config.validate import load_config

    config_checks = []
    try:
        config, _ = load_config(overrides, config_file)
    except UserError as error:
        config = None
        config_checks = [Check(f"config {p.where}", "fail", p.message, p.fix) for p in error.problems]
    if hardware is None:
        from peftstudio.plan.hardware import detect

        # Free disk is measured where the checkpoints go: they are what fills it.
        hardware = detect(config.training.checkpoint_dir if config is not None else ".")
    checks = [check_python(), *check_packages(cuda=hardware.accelerator == "cuda"), *config_checks,
              check_accelerator(hardware, config)]
    checks += check_tokens(config, environ)
    if config is not None:
        checks += _run_checks(config, hardware)
    return DoctorReport(checks)


def _run_checks(config, hardware: HardwareProfile) -> list[Check]:
    from peftstudio.plan.resolve import resolve

    dataset, data = check_dataset(config)
    resolved = resolve(config, hardware, None).config
    return [dataset, check_writable("output_dir", config.training.output_dir),
            check_writable("checkpoint_dir", config.training.checkpoint_dir), check_disk(resolved, hardware),
            *check_hyperparameters(resolved, hardware, data)]


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
