"""API: dataset upload (the request body streamed to disk) and preview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from peftstudio.redact import scrub_tree
from peftstudio.errors import PeftStudioError
from peftstudio.studio.datasets import UploadTooLarge
from peftstudio.studio.routes_config import studio_of
from peftstudio.studio.wizard import WizardState

router = APIRouter(prefix="/api", tags=["datasets"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


@router.post("/datasets", status_code=201, openapi_extra=UPLOAD_BODY,
             summary="Upload a dataset: the raw file as the request body, its name in ?name=")
async def upload_dataset(request: Request, name: str = Query("upload.jsonl", max_length=1000,
                                                              description="file name, display only")) -> dict[str, Any]:
    store = studio_of(request).datasets
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_bytes:
        raise HTTPException(413, f"the file is {int(declared):,} bytes; the limit is {store.max_bytes:,} "
                                 "(start the studio with a larger --max-upload-mb)")
    try:
        info = await store.save(request.stream(), name)
    except UploadTooLarge:
        raise HTTPException(413, f"the upload passed the limit of {store.max_bytes:,} bytes "
                                 "(start the studio with a larger --max-upload-mb)") from None
    return info.to_dict()


@router.get("/datasets", summary="Uploaded datasets")
def list_datasets(request: Request) -> list[dict[str, Any]]:
    return [info.to_dict() for info in studio_of(request).datasets.all()]


@router.get("/datasets/{dataset_id}", summary="One uploaded dataset")
def get_dataset(dataset_id: str, request: Request) -> dict[str, Any]:
    try:
        return studio_of(request).datasets.info(dataset_id).to_dict()
    except LookupError:
        raise HTTPException(404, f"no dataset {dataset_id!r}") from None


def _locked(studio, function, *args):
    with studio.library_lock:
        return function(*args)


@router.post("/preview", summary="Format detection, row count and rendered samples of the state's dataset")
async def post_preview(state: WizardState, request: Request) -> dict[str, Any]:
    """Uses the state's data.format, data.columns, model and training.loss_on, so the preview
    matches what training will see. Data errors come back as problems with file:line."""
    from peftstudio.studio.preview import preview

    studio = studio_of(request)
    checked = studio.check(state.model_copy(update={"values": {k: v for k, v in state.values.items()
                                                               if k.startswith(("model.", "data.", "training.loss_on", "grpo.rewards"))}}))
    if checked.plan is None:
        return scrub_tree({"ok": False, "problems": [vars(p) for p in checked.problems],
                           **await _suggested_objective(request, state)})
    config = checked.plan.config
    path = studio.dataset_path(state) or config.data.path  # an upload, or the bundled sample
    folder = studio.image_folder(state)
    try:
        shown = await run_in_threadpool(_locked, studio, preview, path, config, folder)
    except PeftStudioError as error:
        return scrub_tree({"ok": False, "problems": [vars(studio.shown_problem(p, state)) for p in error.problems]})
    # The plan read the same file with the user's own data.format, so its reason is the one to
    # show (the resolved config passed to the preview already names the detected format).
    return {"ok": True, "problems": [], **shown, "format_reason": checked.plan.data.format_reason}


async def _suggested_objective(request: Request, state: WizardState) -> dict[str, Any]:
    """For an upload SFT cannot read that has preference (or KTO) columns: which objective reads
    it, and its first rows read that way, so the user sees the pairs and what to pick. (Not
    tried with a data.columns mapping: the plan's own message covers a mapping that is wrong.)"""
    from peftstudio.config.schema import DataSettings
    from peftstudio.data.objective_data import FORMAT_COLUMNS
    from peftstudio.studio.preview import SUGGESTED_OBJECTIVES, objective_shape

    try:
        path = studio_of(request).dataset_path(state)
    except LookupError:  # no such upload: the plan's problem says so
        return {}
    if path is None or state.groups.get("objective", "sft") != "sft" or "data.columns" in state.values:
        return {}
    shape = await run_in_threadpool(objective_shape, path, DataSettings(path=str(path)))
    if shape is None:
        return {}
    objective = SUGGESTED_OBJECTIVES[shape].split()[0]
    shown = await post_preview(state.model_copy(update={"groups": {**state.groups, "objective": objective}}), request)
    return {"suggestion": f"these rows are {shape} data ({' / '.join(FORMAT_COLUMNS[shape])}), which objective=sft "
                          f"does not train on: pick objective {SUGGESTED_OBJECTIVES[shape]} in step 2",
            "pairs": shown.get("pairs", []), "format": shape}
