"""peft.init_adapter: a run that starts from an existing adapter (typically SFT before DPO or
GRPO) instead of a fresh one. Checked at plan time from the adapter's files alone (no weights
load): where it is, that its shape settings are the run's, that it was made for this base.

The reference of dpo / kto / grpo is then the starting adapter itself: TRL copies a PeftModel's
pretrained adapter into a frozen "ref" adapter (train/objectives.py keeps it), so the KL and the
preference log-ratios are measured against the SFT model the run starts from, not the bare base.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem

ADAPTER_CONFIG = "adapter_config.json"
# peft's adapter_config.json key -> (peft.* key, the run's value)
_SHAPE = {"r": "r", "lora_alpha": "alpha", "use_dora": "use_dora", "use_rslora": "use_rslora"}
KEY = "peft.init_adapter"


def adapter_dir(value: str) -> Path | None:
    """The adapter dir `value` names: itself, or a run dir's adapter/; None when neither holds one."""
    path = Path(value).expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    return None


def init_adapter_problems(config: RunConfig) -> list[Problem]:
    """Every reason peft.init_adapter cannot start this run."""
    value = config.peft.init_adapter
    if value is None:
        return []
    found = adapter_dir(value)
    if found is None:
        return [Problem(KEY, f"{value}: no adapter there (no {ADAPTER_CONFIG} in it or in its adapter/)",
                        "point it at an earlier run's output dir (training.output_dir) or at its adapter dir")]
    try:
        saved = json.loads((found / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as error:
        return [Problem(f"{found / ADAPTER_CONFIG}", f"unreadable adapter config: {error}", "point peft.init_adapter at an intact adapter")]
    problems = []
    if saved.get("peft_type") != "LORA":
        problems.append(Problem(KEY, f"{found} is a {saved.get('peft_type')} adapter, not LoRA", "start from a LoRA adapter"))
    peft = config.peft
    differ = {f"peft.{ours}": saved.get(theirs) for theirs, ours in _SHAPE.items()
              if theirs in saved and saved[theirs] != getattr(peft, ours)}
    if differ:
        shown = " ".join(f"{key}={_yaml(value)}" for key, value in differ.items())
        problems.append(Problem(KEY, f"{found} was trained with {shown}, this run sets "
                                + " ".join(f"{key}={_yaml(getattr(peft, key[5:]))}" for key in differ),
                                f"set {shown} (the adapter's shape cannot change)"))
    if peft.init != "default":
        problems.append(Problem("peft.init", f"{peft.init} with peft.init_adapter: the starting adapter gives the "
                                "initial weights", "leave peft.init=default"))
    if saved.get("modules_to_save"):
        problems.append(Problem(KEY, f"{found} also trains {saved['modules_to_save']} in full (added tokens); starting "
                                "from such an adapter is not supported", "start from an adapter trained without "
                                "data.add_special_tokens"))
    architecture = config.model.architecture
    if architecture is not None and architecture.vision is not None:
        problems.append(Problem(KEY, "starting an image-text model from an adapter is not supported yet",
                                "leave peft.init_adapter unset (null)"))
    problems += _base_problems(config, found)
    return problems


def _base_problems(config: RunConfig, found: Path) -> list[Problem]:
    """A peftstudio run dir records its base model: it must be this run's."""
    plan_file = found.parent / "plan.json"
    if not plan_file.is_file():
        return []
    try:
        base = json.loads(plan_file.read_text())["config"]["model"]["name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if base != config.model.name_or_path:
        return [Problem(KEY, f"{found} was trained on model {base}, this run trains {config.model.name_or_path}",
                        f"set model.name_or_path={base} or start from an adapter of {config.model.name_or_path}")]
    return []


def init_adapter_note(config: RunConfig) -> str | None:
    """What `plan` says about the starting adapter (None: a fresh one)."""
    value = config.peft.init_adapter
    if value is None:
        return None
    found = adapter_dir(value)
    saved = json.loads((found / ADAPTER_CONFIG).read_text()) if found else {}
    targets = saved.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    note = f"starts from the adapter in {found} (its targets: {targets}), not a fresh one"
    if config.objective != "sft":
        note += "; the reference model is that starting adapter (a frozen copy, small beside the base), not the bare base"
    return note


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)
