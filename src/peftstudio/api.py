"""The functions the CLI (and later the studio) call: one entry point per user action.

Heavy libraries (torch, transformers) are imported inside the functions that need them, so
config errors come back before any of them is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.explain import Explanation, explain
from peftstudio.config.validate import load_config
from peftstudio.errors import Problem, UserError
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.runplan import RunPlan, make_plan, plan_with_data

__all__ = ["explain", "Explanation", "plan", "train", "validate_files", "generate", "make_plan", "detect",
           "estimate", "diagnose", "doctor", "sweep", "cost", "launch"]


def plan(overrides: list[str] | None = None, config_file: Path | None = None,
         hardware: HardwareProfile | None = None) -> RunPlan:
    """The fully resolved, checked plan of a run; loads no weights."""
    return make_plan(overrides, config_file, hardware)


def train(overrides: list[str] | None = None, config_file: Path | None = None, console=None,
          on_plan=None, callbacks: list | None = None):
    """Plan, then train; `on_plan(plan)` is called once the plan is known (to print it);
    `callbacks` are extra trainer callbacks (a sweep's pruning hook)."""
    from rich.console import Console

    console = console or Console()
    run_plan, data = plan_with_data(overrides, config_file)
    if on_plan is not None:
        on_plan(run_plan)
    from peftstudio.train.run import run_training

    quiet_libraries(interactive=console.is_terminal)
    return run_training(run_plan, data, console, callbacks)


@dataclass(frozen=True)
class Detection:
    hardware: HardwareProfile
    recommendations: list  # plan.platforms.Recommendation

    def to_dict(self) -> dict:
        return {"hardware": self.hardware.to_dict(),
                "recommendations": {r.key: {"value": r.value, "reason": r.reason} for r in self.recommendations}}


def detect(output_dir: Path | str = ".", hardware: HardwareProfile | None = None) -> Detection:
    """The machine (or `hardware`) and the platform preset, precision, attention and
    accelerate config recommended for it, each with its reason."""
    from peftstudio.plan.hardware import detect as detect_hardware
    from peftstudio.plan.platforms import recommend

    hardware = hardware or detect_hardware(output_dir)
    return Detection(hardware, recommend(hardware))


@dataclass(frozen=True)
class Estimates:
    config: object  # RunConfig
    hardware: HardwareProfile
    estimates: list  # plan.memory.MemoryEstimate, one per micro-batch size

    def to_dict(self) -> dict:
        return {"model": self.config.model.name_or_path, "device": self.hardware.accelerator,
                "device_memory_bytes": self.hardware.device_memory,
                "estimates": [{**e.to_dict(), "fits": e.fits(self.hardware.device_memory)} for e in self.estimates]}


def estimate(overrides: list[str] | None = None, config_file: Path | None = None, batch_sizes: list[int] | None = None,
             hardware: HardwareProfile | None = None) -> Estimates:
    """Predicted peak memory per micro-batch size, by component; no weights, no data read."""
    from peftstudio.plan.hardware import detect as detect_hardware
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.resolve import resolve

    config, _ = load_config(overrides, config_file)
    hardware = hardware or detect_hardware(config.training.output_dir)
    sizes = batch_sizes or [1, 2, 4, 8]
    micro_batch = config.training.micro_batch_size
    # the micro-batch itself is what is varied here: resolve the rest as if it were 1
    fixed = config.model_copy(update={"training": config.training.model_copy(update={"micro_batch_size": 1})}) \
        if micro_batch == "auto" else config
    resolved = resolve(fixed, hardware, None).config
    return Estimates(resolved, hardware, [estimate_memory(resolved, micro_batch_size=size, hardware=hardware)
                                          for size in sizes])


def validate_files(paths: list[Path]) -> dict[Path, list[Problem]]:
    """Each file composed on top of the defaults and validated; problems per file."""
    results = {}
    for path in paths:
        try:
            load_config([], path)
            results[path] = []
        except UserError as error:
            results[path] = error.problems
    return results


def quiet_libraries(interactive: bool) -> None:
    """Library deprecation notices are for peftstudio's developers, not its users; progress
    bars are for terminals, not log files."""
    import warnings

    for module in ("transformers", "trl", "peft", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    if not interactive:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True)
class Generation:
    prompt: str
    expected: str | None
    base: str
    adapter: str


def generate(run_dir: Path, prompts: list[str] | None = None, count: int = 5,
             max_new_tokens: int = 48) -> list[Generation]:
    """Greedy generations from a trained run's adapter next to the base model's, with the
    chat template applied. Without prompts, uses the first validation samples of the run."""
    from peftstudio.infer import load_run_model, run_prompts

    quiet_libraries(interactive=False)
    model, tokenizer, config = load_run_model(Path(run_dir))
    expected: list[str | None]
    if prompts:
        expected = [None] * len(prompts)
    else:
        prompts, expected = _validation_prompts(config, count)
    return [Generation(p, e, base, tuned) for p, e, (base, tuned) in
            zip(prompts, expected, run_prompts(model, tokenizer, prompts, max_new_tokens))]


def _validation_prompts(config, count: int) -> tuple[list[str], list[str | None]]:
    from peftstudio.build.data import prepare_data

    data = prepare_data(config.data)
    rows = [r for r in data.validation_rows or data.train_rows if "prompt" in r][:count]
    return [r["prompt"][-1]["content"] for r in rows], [r["completion"][-1]["content"] for r in rows]


def diagnose(run_dir: Path):
    """Name the problems of a run from its metrics, resolved config, plan and log."""
    from peftstudio.diagnose.report import diagnose_run

    return diagnose_run(Path(run_dir))


def sweep(sweep_file: Path, trials: int | None = None, study_dir: Path | None = None, console=None, on_trial=None):
    """Run (or continue) the Optuna study a sweep file describes; each trial is a `train` run."""
    from peftstudio.sweep.study import run_sweep

    quiet_libraries(interactive=False)
    return run_sweep(Path(sweep_file), trials, study_dir, console, on_trial)


def doctor(overrides: list[str] | None = None, config_file: Path | None = None,
           hardware: HardwareProfile | None = None, environ: dict[str, str] | None = None):
    """Check packages, accelerator, tokens, data, directories, disk and hyperparameters."""
    from peftstudio.doctor.report import run_doctor

    return run_doctor(overrides, config_file, hardware, environ)


def cost(run_plan: RunPlan, price_file: Path | None = None):
    """Time here and cost on rented GPUs that fit; None when the model has no architecture
    numbers to estimate from (a hub id that is not a preset)."""
    from peftstudio.plan.architecture import architecture_of
    from peftstudio.plan.cost import cost_report

    try:
        architecture_of(run_plan.config)
    except UserError:
        return None
    return cost_report(run_plan, price_file)


def launch(overrides: list[str] | None, config_file: Path | None, provider: str, gpu: str | None = None,
           spot: bool = False, bucket: str | None = None, out: Path = Path("sky-task.yaml"),
           price_file: Path | None = None):
    """Write a SkyPilot task (and the config it runs) for `provider`; returns the command to start it."""
    from peftstudio.launch.prepare import prepare_launch

    return prepare_launch(list(overrides or []), config_file, provider, gpu, spot, bucket, Path(out), price_file)
