"""Diagnose a run directory: findings, their JSON form, and diagnosis.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftstudio.diagnose.evidence import read_evidence
from peftstudio.diagnose.rules import Finding, diagnose_evidence
from peftstudio.files import write_json

DIAGNOSIS_FILE = "diagnosis.json"


@dataclass(frozen=True)
class Diagnosis:
    run_dir: Path
    findings: list[Finding]
    logs: int
    evaluations: int

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "healthy": self.healthy, "logs": self.logs,
                "evaluations": self.evaluations, "findings": [f.to_dict() for f in self.findings]}


def diagnose_run(run_dir: Path) -> Diagnosis:
    """Read RUN_DIR's metrics, resolved config, plan and log; name every problem found."""
    evidence = read_evidence(Path(run_dir))
    return Diagnosis(evidence.run_dir, diagnose_evidence(evidence), len(evidence.train), len(evidence.evals))


def write_diagnosis(run_dir: Path) -> Diagnosis:
    """Diagnose RUN_DIR and keep the result as RUN_DIR/diagnosis.json."""
    diagnosis = diagnose_run(run_dir)
    write_json(Path(run_dir) / DIAGNOSIS_FILE, diagnosis.to_dict())
    return diagnosis


def print_diagnosis(console, diagnosis: Diagnosis) -> None:
    """One block per finding: the problem, the numbers that show it, the overrides to try."""
    console.print(f"[bold]diagnose[/] {diagnosis.run_dir}: {diagnosis.logs} train logs, {diagnosis.evaluations} evaluations")
    if diagnosis.healthy:
        console.print("[green]no problem found[/]: loss finite and falling, no out-of-memory, no spikes or stalls")
        return
    for finding in diagnosis.findings:
        console.print(f"[bold red]{finding.title}[/] ({finding.problem})")
        console.print(f"  evidence: {finding.evidence}", markup=False)
        if finding.overrides:
            console.print(f"  try:      {' '.join(finding.overrides)}", markup=False)
        for line in finding.advice:
            console.print(f"  note:     {line}", markup=False)
