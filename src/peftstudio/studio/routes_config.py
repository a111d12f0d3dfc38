"""API: presets, hardware, explain, wizard steps, validate and estimate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from peftstudio.redact import scrub_tree
from peftstudio.studio import catalog
from peftstudio.studio.context import Checked, Studio
from peftstudio.studio.estimate import memory_estimate
from peftstudio.studio.wizard import WizardState, cli_command, config_yaml

router = APIRouter(prefix="/api", tags=["configure"])


def studio_of(request: Request) -> Studio:
    return request.app.state.studio


class ComputeTarget(BaseModel):
    """Where the run is estimated: this machine, or a cloud GPU type of a provider."""

    provider: str = Field(default="local", description="local, or a provider of the price file (runpod, lambda, vast)")
    gpu: str | None = Field(default=None, description="GPU type of the provider")


class EstimateRequest(BaseModel):
    state: WizardState = Field(default_factory=WizardState)
    target: ComputeTarget = Field(default_factory=ComputeTarget)


@router.get("/presets", summary="Model, method, training and tracking presets")
def get_presets() -> dict[str, Any]:
    return catalog.presets()


@router.get("/steps", summary="The wizard's seven steps and the documented fields each edits")
def get_steps() -> list[dict[str, Any]]:
    return catalog.steps()


@router.get("/explain/{key}", summary="`peftstudio explain KEY` as JSON")
def get_explain(key: str) -> dict[str, Any]:
    return catalog.explanation_dict(key)


@router.get("/hardware", summary="This machine, and the cloud GPU types with prices when the price file ships")
def get_hardware(request: Request) -> dict[str, Any]:
    from peftstudio.studio.providers import provider_targets

    return {"local": studio_of(request).hardware().to_dict(), "providers": provider_targets()}


@router.post("/validate", summary="Check wizard state with the CLI's schema, data reader and plan checks")
def post_validate(state: WizardState, request: Request) -> dict[str, Any]:
    return checked_dict(studio_of(request).check(state))


def checked_dict(checked: Checked) -> dict[str, Any]:
    """Problems, warnings, and when the state is valid: the YAML, the CLI line and the plan."""
    result: dict[str, Any] = {
        "ok": checked.ok,
        "problems": [vars(problem) for problem in checked.problems],
        "environment": checked.environment,
        "warnings": list(checked.translation.warnings),
        "overrides": checked.translation.overrides,
        "command": cli_command(checked.translation.overrides) if checked.translation.overrides else "",
    }
    if checked.plan is not None:
        plan = checked.plan
        result["warnings"] += list(plan.warnings)
        result["yaml"] = config_yaml(checked.translation.overrides)
        result["plan"] = {"data": vars(plan.data), "schedule": vars(plan.schedule), "decisions": {k: d.describe() for k, d in plan.decisions.items()},
                          "config": plan.config.model_dump(mode="json")}
    return scrub_tree(result)  # values from the studio's environment are never echoed


@router.post("/estimate", summary="Memory, time and cost of the state on a compute target")
def post_estimate(body: EstimateRequest, request: Request) -> dict[str, Any]:
    from peftstudio.studio.providers import cost_estimate, target_hardware

    studio = studio_of(request)
    hardware = target_hardware(body.target.provider, body.target.gpu, studio.hardware())
    checked = studio.check(body.state, hardware)
    result = {"ok": checked.ok, "problems": [vars(p) for p in checked.problems], "hardware": hardware.to_dict()}
    if checked.plan is not None:
        from peftstudio.plan.objectives import objective_notes

        config = checked.plan.config
        # The objective the figures are for and what plan says about how it runs (the memory
        # and time estimates below are already the objective's: the plan computed them).
        result["objective"] = config.objective
        result["objective_line"] = " ".join(objective_notes(config))
        result["memory"] = memory_estimate(config, hardware)
        result["cost"] = cost_estimate(checked.plan, body.target.provider, body.target.gpu)
        result["schedule"] = vars(checked.plan.schedule)
    return scrub_tree(result)
