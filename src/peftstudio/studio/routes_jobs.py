"""API: jobs — create, list, get, cancel, resume, metrics (JSON and a server-sent event
stream), files of the run, and "try it" generation with the trained adapter."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from peftstudio.errors import UserError
from peftstudio.plan.runs import read_run
from peftstudio.studio.catalog import TRACKER_SECRETS
from peftstudio.studio.jobs import FINISHED, Job
from peftstudio.studio.routes_config import checked_dict, studio_of
from peftstudio.studio.wizard import WizardState, cli_command, config_yaml
from peftstudio.studio.worker import CONFIG_FILE, CONSOLE_LOG

router = APIRouter(prefix="/api/jobs", tags=["jobs"])
RUN_FILES = {"loss.png": "image/png", "config.resolved.yaml": "text/plain", "plan.json": "application/json",
             "metrics.jsonl": "text/plain", "train.log": "text/plain"}
LOG_TAIL_LINES = 40
# SQLite integers are 64-bit; larger ids are answered 422 instead of overflowing.
JobId = Annotated[int, PathParam(ge=1, le=2**62)]


class JobRequest(BaseModel):
    state: WizardState = Field(default_factory=WizardState)
    name: str | None = Field(default=None, max_length=200)
    secrets: dict[str, str] = Field(default_factory=dict, description="tracker keys; kept in the server's memory only")


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=4000)
    max_new_tokens: int = Field(default=48, ge=1, le=256)


def finite(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record that JSON can carry: NaN/inf losses (a diverged run) become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


def run_records(outputs: Path) -> list[dict[str, Any]]:
    try:
        records = read_run(outputs).metrics
    except UserError:  # the job has written nothing yet
        return []
    return [finite(record) for record in records]


def _job(request: Request, job_id: int) -> Job:
    job = studio_of(request).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _outputs(request: Request, job: Job) -> Path:
    return studio_of(request).jobs.job_dir(job.id) / "outputs"


@router.post("", status_code=201, summary="Check the state like `peftstudio plan`, then queue it as a job")
def create_job(body: JobRequest, request: Request) -> dict[str, Any]:
    studio = studio_of(request)
    checked = studio.check(body.state)
    if not checked.ok:
        raise HTTPException(400, {"message": "the run cannot start", **checked_dict(checked)})
    overrides = checked.translation.overrides
    config = checked.plan.config
    name = body.name or f"{config.model.name_or_path} · {config.peft.method}"
    job = studio.jobs.create(name, lambda job_dir: config_yaml(overrides, job_dir))
    allowed = {key for keys in TRACKER_SECRETS.values() for key in keys}
    studio.runner.submit_secrets(job.id, {k: v for k, v in body.secrets.items() if k in allowed})
    studio.runner.tick()
    return job_dict(request, studio.jobs.get(job.id))


@router.get("", summary="All jobs in queue order")
def list_jobs(request: Request) -> list[dict[str, Any]]:
    return [job.to_dict() for job in studio_of(request).jobs.all()]


def job_dict(request: Request, job: Job) -> dict[str, Any]:
    """A job with what its page shows: log tail, latest metrics, files, config and command."""
    job_dir = studio_of(request).jobs.job_dir(job.id)
    outputs = job_dir / "outputs"
    records = run_records(outputs)
    latest = next((r for r in reversed(records) if "loss" in r), None)
    config_text = (job_dir / CONFIG_FILE).read_text(encoding="utf-8")
    return {
        **job.to_dict(),
        "config_yaml": config_text,
        "command": cli_command(["--config", str(job_dir / CONFIG_FILE)]),
        "log_tail": _tail(job_dir / CONSOLE_LOG),
        "latest": latest,
        "total_steps": _total_steps(outputs),
        "files": [name for name in RUN_FILES if (outputs / name).is_file()],
        "adapter_files": sorted(p.name for p in (outputs / "adapter").glob("*") if p.is_file()),
        "diagnosis": _diagnosis(outputs) if job.status in ("failed", "interrupted") else None,
        "evaluations": evaluation_steps(outputs),
    }


def evaluation_steps(outputs: Path) -> list[int]:
    """Steps with a predictions table (RUN_DIR/eval/step-N.jsonl, written with eval.metrics), in order."""
    steps = [p.stem.removeprefix("step-") for p in (outputs / "eval").glob("step-*.jsonl")]
    return sorted(int(step) for step in steps if step.isdigit())


def _total_steps(outputs: Path) -> int | None:
    try:
        return read_run(outputs, require_plan=True).plan.schedule.optimizer_steps
    except UserError:  # the job has not written its plan yet
        return None


def _tail(path: Path) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(path.stat().st_size - 64_000, 0))
        text = handle.read().decode("utf-8", errors="replace")
    # Progress bars redraw with carriage returns; show each redraw's final state only.
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join([line for line in lines if line.strip()][-LOG_TAIL_LINES:])


def _diagnosis(outputs: Path) -> dict[str, Any] | None:
    from peftstudio.studio.diagnosis import diagnose_run

    return diagnose_run(outputs)


@router.get("/{job_id}", summary="One job with log tail, latest metrics and files")
def get_job(job_id: JobId, request: Request) -> dict[str, Any]:
    return job_dict(request, _job(request, job_id))


@router.post("/{job_id}/cancel", summary="Cancel: a queued job leaves the queue; a running one gets SIGTERM")
def cancel_job(job_id: JobId, request: Request) -> dict[str, Any]:
    _job(request, job_id)
    return studio_of(request).runner.cancel(job_id).to_dict()


@router.post("/{job_id}/resume", summary="Queue a cancelled, failed or interrupted job again from its last checkpoint")
def resume_job(job_id: JobId, request: Request) -> dict[str, Any]:
    _job(request, job_id)
    job = studio_of(request).runner.resume(job_id)
    studio_of(request).runner.tick()
    return studio_of(request).jobs.get(job.id).to_dict()


@router.get("/{job_id}/metrics", summary="metrics.jsonl records from an offset (a record count)")
def get_metrics(job_id: JobId, request: Request, offset: int = Query(0, ge=0, le=2**62)) -> dict[str, Any]:
    """A resumed run rewrites the records after its checkpoint; when the file got shorter than
    `offset`, every record comes back with `reset: true`."""
    records = run_records(_outputs(request, _job(request, job_id)))
    reset = offset > len(records)
    return {"records": records if reset else records[offset:], "next_offset": len(records), "reset": reset}


@router.get("/{job_id}/events", summary="Server-sent events: `metrics` per new record (`reset` when a resume rewrote them), `status` each second until the job ends")
async def stream_events(job_id: JobId, request: Request) -> StreamingResponse:
    _job(request, job_id)
    return StreamingResponse(_events(request, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def _events(request: Request, job_id: int):
    studio = studio_of(request)
    outputs = studio.jobs.job_dir(job_id) / "outputs"
    sent = 0
    while True:
        records = run_records(outputs)
        if len(records) < sent:  # a resumed run rewrote the records after its checkpoint
            yield "event: reset\ndata: {}\n\n"
            sent = 0
        for record in records[sent:]:
            yield f"event: metrics\ndata: {json.dumps(record)}\n\n"
        sent = len(records)
        job = studio.jobs.get(job_id)
        yield f"event: status\ndata: {json.dumps({'status': job.status})}\n\n"
        if job.status in FINISHED or await request.is_disconnected():
            return
        await asyncio.sleep(1.0)


@router.get("/{job_id}/files/{name}", summary="A run file: loss.png, config.resolved.yaml, plan.json, metrics.jsonl, train.log")
def get_file(job_id: JobId, name: str, request: Request) -> FileResponse:
    if name not in RUN_FILES:
        raise HTTPException(404, f"no run file {name!r}; files: {', '.join(RUN_FILES)}")
    path = _outputs(request, _job(request, job_id)) / name
    if not path.is_file():
        raise HTTPException(404, f"{name} is not written yet")
    return FileResponse(path, media_type=RUN_FILES[name], filename=name)


@router.get("/{job_id}/evaluations/{step}", summary="The predictions table of one evaluation: prompt, target, prediction, per-metric scores")
def get_evaluation(job_id: JobId, step: Annotated[int, PathParam(ge=0, le=2**62)], request: Request) -> dict[str, Any]:
    path = _outputs(request, _job(request, job_id)) / "eval" / f"step-{step}.jsonl"
    if not path.is_file():
        raise HTTPException(404, f"no predictions table for step {step}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"step": step, "rows": rows}


@router.get("/{job_id}/adapter/{name}", summary="A file of the trained adapter (PEFT format)")
def get_adapter_file(job_id: JobId, name: str, request: Request) -> FileResponse:
    adapter = _outputs(request, _job(request, job_id)) / "adapter"
    present = {p.name: p for p in adapter.glob("*") if p.is_file()}
    if name not in present:  # only names listed from the directory itself: no path is built from input
        raise HTTPException(404, f"no adapter file {name!r}")
    return FileResponse(present[name], filename=name)


@router.post("/{job_id}/generate", summary="Try it: greedy generation with the adapter, next to the base model")
async def generate(job_id: JobId, body: GenerateRequest, request: Request) -> dict[str, Any]:
    from peftstudio import api

    studio = studio_of(request)
    outputs = _outputs(request, _job(request, job_id))
    if not (outputs / "adapter" / "adapter_config.json").is_file():
        raise HTTPException(409, "the job has no trained adapter yet")

    def run() -> dict[str, Any]:
        with studio.library_lock:
            item, = api.generate(outputs, [body.prompt], max_new_tokens=body.max_new_tokens)
        return {"prompt": item.prompt, "base": item.base, "adapter": item.adapter}

    return await run_in_threadpool(run)
