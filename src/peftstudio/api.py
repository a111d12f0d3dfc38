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
from peftstudio.plan.pipeline import make_plan, plan_with_data
from peftstudio.plan.runplan import RunPlan
from peftstudio.settings import process_place
from peftstudio.train.faults import NO_FAULTS, Faults

__all__ = ["explain", "Explanation", "plan", "train", "validate_files", "generate", "merge", "import_config",
           "make_plan", "detect", "estimate", "write_accelerate_config",
           "diagnose", "doctor", "cost", "launch", "preview_data"]


def plan(overrides: list[str] | None = None, config_file: Path | None = None,
         hardware: HardwareProfile | None = None) -> RunPlan:
    """The fully resolved, checked plan of a run; loads no weights."""
    return make_plan(overrides, config_file, hardware, process_place())


def train(overrides: list[str] | None = None, config_file: Path | None = None, console=None,
          on_plan=None, callbacks: list | None = None, plan_file: Path | None = None,
          hardware: HardwareProfile | None = None, faults: Faults = NO_FAULTS, memory_budget: int | None = None):
    """Plan (or read the saved plan `plan_file`, checked against this machine and the data),
    save it, then execute it: in this process, or in the workers of a multi-process run, each
    executing the same saved plan. `on_plan(plan)` is called once the plan is final (to print
    it); `callbacks` are extra trainer callbacks (a sweep's pruning hook); `faults` are
    injected by tests (in every worker too); `memory_budget` (bytes) bounds the probes of
    micro_batch_size=auto."""
    from rich.console import Console

    console = console or Console()
    place = process_place()
    run_plan, data = _plan_to_execute(overrides, config_file, plan_file, hardware, place)
    with _hold_run_dirs(run_plan, console, place), _signals_interrupt():
        if run_plan.decisions["training.micro_batch_size"].origin == "auto" and not place.launched:
            run_plan = _measure_micro_batch(run_plan, data, console, memory_budget)
        if on_plan is not None and not place.launched:
            on_plan(run_plan)
        quiet_libraries(interactive=console.is_terminal)
        if run_plan.config.training.num_processes > 1 and not place.launched:
            return _launch(run_plan, console, faults)
        return _train_here(run_plan, data, console, callbacks, faults)


def _hold_run_dirs(run_plan: RunPlan, console, place):
    """The run's lock on its output and checkpoint dirs, held by the process that plans it (the
    launcher of a multi-process run, whose workers train under its lock)."""
    from contextlib import nullcontext

    from peftstudio.train.lock import RunLock

    training = run_plan.config.training
    if place.launched or training.machine_rank > 0:
        return nullcontext()  # machine 0's launcher holds the run's directories
    return RunLock({"training.output_dir": Path(training.output_dir), "training.checkpoint_dir":
                    Path(training.checkpoint_dir)},
                   report=lambda message: console.print(f"[yellow]note[/]      {message}", highlight=False))


def _signals_interrupt():
    """SIGTERM stops a run as Ctrl-C does, so both unwind through the run's cleanup (sinks
    closed, locks released) and say where the run stopped (train/run.py)."""
    import signal
    import threading
    from contextlib import contextmanager

    def stop(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    @contextmanager
    def installed():
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return installed()


def _plan_to_execute(overrides, config_file, plan_file, hardware, place):
    """(plan, tokenized data): planned now (for a process at `place`), or read from `plan_file`
    and checked."""
    if plan_file is None:
        return plan_with_data(overrides, config_file, hardware, require_tokenizer=True, place=place)
    from peftstudio.plan.hardware import detect
    from peftstudio.plan.pipeline import execution_data

    if overrides or config_file:
        raise UserError(Problem("train --plan", "a saved plan is executed as it is: overrides and --config "
                                                "cannot change it", "plan again with the overrides: peftstudio plan "
                                                                    "OVERRIDES --out plan.json"))
    run_plan = RunPlan.read(Path(plan_file))
    hardware = hardware or detect(run_plan.config.training.output_dir)
    return run_plan, execution_data(run_plan, hardware, str(plan_file), place)


def _train_here(run_plan: RunPlan, data, console, callbacks, faults: Faults):
    """Execute the plan in this process; a run the watchdog stopped gets its diagnosis."""
    from peftstudio.diagnose.report import DIAGNOSIS_FILE, write_diagnosis
    from peftstudio.train.run import out_of_disk, run_training
    from peftstudio.train.watchdog import WatchdogStopped

    try:
        return run_training(run_plan, data, console, callbacks, faults)
    except OSError as error:  # a full disk anywhere in the run (checkpoint, adapter, metrics): exit 3, named
        raise out_of_disk(error, run_plan) or error
    except RuntimeError as error:  # torch.save's own words for a full disk
        raise out_of_disk(error, run_plan) or error
    except WatchdogStopped as stopped:
        if not process_place().is_main:
            raise
        overrides = [o for finding in write_diagnosis(stopped.run_dir).findings for o in finding.overrides]
        raise WatchdogStopped(stopped.steps, stopped.run_dir,
                              f"try {' '.join(dict.fromkeys(overrides))} training.resume=never "
                              f"(diagnosis in {stopped.run_dir / DIAGNOSIS_FILE})") from None


def _launch_dir(run_dir, machine_rank: int) -> Path:
    """Where this machine's launcher puts the plan its workers execute and their accelerate
    config: the run dir on machine 0, which alone writes it; a private temporary dir on the
    others (the run dir may be the same shared directory, and is machine 0's)."""
    if machine_rank == 0:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        return run_dir.root
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"peftstudio-machine{machine_rank}-"))


def _launch(run_plan: RunPlan, console, faults: Faults):
    """Save the plan (machine 0: in the run dir), start the workers on it, report what rank 0 wrote."""
    from peftstudio.launch.processes import launch_workers
    from peftstudio.plan.runs import read_run
    from peftstudio.track.runs import RunDir
    from peftstudio.train.checkpoints import CheckpointDir, resume_target
    from peftstudio.train.run import TrainResult

    training = run_plan.config.training
    # A checkpoint dir of another run is a user error: say so now, not from inside a worker.
    resume_target(CheckpointDir.at(training.checkpoint_dir), training.resume, run_plan.fingerprint, run_plan.identity)
    run_dir = RunDir.at(training.output_dir)
    launch_dir = _launch_dir(run_dir, training.machine_rank)
    try:
        run_plan.write(launch_dir / run_dir.plan.name)
        launch_workers(run_plan.config, launch_dir / run_dir.plan.name, launch_dir, console, faults.as_arguments())
    finally:
        if launch_dir != run_dir.root:
            import shutil

            shutil.rmtree(launch_dir, ignore_errors=True)
    if not run_dir.metrics.is_file():  # another machine's run dir (machine 0 writes it)
        console.print(f"machine {training.machine_rank} of {training.num_machines}: its processes finished; "
                      "machine 0 writes the run dir, the metrics and the adapter")
        return TrainResult(run_dir, None, 0, None, None, False, report=False)
    records = read_run(run_dir.root).metrics
    losses = [r["loss"] for r in records if "loss" in r]
    final_step = max((r["step"] for r in records), default=0)
    return TrainResult(run_dir, None, final_step, losses[0] if losses else None, losses[-1] if losses else None,
                       final_step < run_plan.schedule.optimizer_steps)


def write_accelerate_config(name: str, out: Path, num_processes: int | None = None, num_machines: int = 1,
                            machine_rank: int = 0, main_process_ip: str | None = None,
                            main_process_port: int | None = None, mixed_precision: str | None = None,
                            gradient_accumulation_steps: int = 1) -> "WrittenConfig":
    """Write accelerate config `name` to `out`. Without num_processes: 1 for single_gpu and
    cpu, otherwise the GPUs of this machine (at least 2) times num_machines. Without
    mixed_precision: bf16 on GPUs, no (fp32) on CPU."""
    from peftstudio.launch.accelerate_configs import ProcessLayout, train_overrides, validate_layout
    from peftstudio.launch.accelerate_configs import write_accelerate_config as write

    if num_processes is None:
        num_processes = 1 if name in ("single_gpu", "cpu") else max(_local_gpu_count(), 2) * num_machines
    if mixed_precision is None:
        mixed_precision = "no" if name == "cpu" else "bf16"
    layout = ProcessLayout(num_processes, num_machines, machine_rank, main_process_ip, main_process_port,
                           mixed_precision, gradient_accumulation_steps)
    validate_layout(name, layout)
    return WrittenConfig(write(name, layout, out), train_overrides(name, layout))


@dataclass(frozen=True)
class WrittenConfig:
    path: Path
    train_overrides: list[str]  # what `train` needs under this config: training.distributed=..., processes


def _local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Detection:
    hardware: HardwareProfile
    recommendations: list  # plan.recommend.Recommendation

    def to_dict(self) -> dict:
        return {"hardware": self.hardware.to_dict(),
                "recommendations": {r.key: {"value": r.value, "reason": r.reason} for r in self.recommendations}}


def detect(output_dir: Path | str = ".", hardware: HardwareProfile | None = None) -> Detection:
    """The machine (or `hardware`) and the platform preset, precision, attention and
    accelerate config recommended for it, each with its reason."""
    from peftstudio.plan.hardware import detect as detect_hardware
    from peftstudio.plan.recommend import recommend

    hardware = hardware or detect_hardware(output_dir)
    return Detection(hardware, recommend(hardware))


@dataclass(frozen=True)
class Estimates:
    config: object  # RunConfig
    hardware: HardwareProfile
    estimates: list  # plan.memory.MemoryEstimate, one per micro-batch size
    device_bytes: int  # what "fits" compares with: one device of `hardware`, or the size asked for

    def to_dict(self) -> dict:
        return {"model": self.config.model.name_or_path, "device": self.config.device,
                "device_memory_bytes": self.device_bytes,
                "estimates": [{**e.to_dict(), "fits": e.fits(self.device_bytes)} for e in self.estimates]}


def estimate(overrides: list[str] | None = None, config_file: Path | None = None, batch_sizes: list[int] | None = None,
             hardware: HardwareProfile | None = None, device_bytes: int | None = None) -> Estimates:
    """Predicted peak memory per micro-batch size, by component; no weights, no data read.
    `device_bytes` compares with a device other than this machine's (e.g. a GPU to rent)."""
    from peftstudio.plan.hardware import detect as detect_hardware
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.platforms import compose_for_platform
    from peftstudio.plan.resolve import resolve

    requested, composition = load_config(overrides, config_file)
    hardware = hardware or detect_hardware(requested.training.output_dir)
    config, _ = compose_for_platform(requested, composition, overrides, config_file, hardware)
    sizes = batch_sizes or [1, 2, 4, 8]
    micro_batch = config.training.micro_batch_size
    # the micro-batch itself is what is varied here: resolve the rest as if it were 1
    fixed = config.model_copy(update={"training": config.training.model_copy(update={"micro_batch_size": 1})}) \
        if micro_batch == "auto" else config
    resolved = resolve(fixed, hardware, None).config
    return Estimates(resolved, hardware, [estimate_memory(resolved, micro_batch_size=size) for size in sizes],
                     device_bytes or hardware.device_memory)


def find_batch_size(overrides: list[str] | None = None, config_file: Path | None = None, max_size: int | None = None,
                    budget_bytes: int | None = None, output: Path | None = None, on_probe=None,
                    hardware: HardwareProfile | None = None):
    """Probe the device for the largest micro-batch that fits, keeping the effective batch;
    writes the result (every probe included) to `output` as JSON when given."""
    from peftstudio.train.batch_size import find_batch_size as search_device

    run_plan, data = plan_with_data(overrides, config_file, hardware, require_tokenizer=True, place=process_place())
    quiet_libraries(interactive=False)
    result = search_device(run_plan.config, data, run_plan.hardware, max_size=max_size,
                           budget_bytes=budget_bytes, on_probe=on_probe)
    if output is not None:
        result.write(output)
    return result


def _measure_micro_batch(run_plan: RunPlan, data, console, budget_bytes: int | None) -> RunPlan:
    """micro_batch_size=auto: confirm the estimator's pick with real probes before training,
    and keep the effective batch by raising the accumulation if a smaller one is needed."""
    from peftstudio.train.batch_size import find_batch_size as search_device
    from peftstudio.plan.pipeline import with_measured_micro_batch

    quiet_libraries(interactive=console.is_terminal)
    console.print("[bold]probing[/]   micro_batch_size=auto: measuring the largest micro-batch that fits")
    result = search_device(run_plan.config, data, run_plan.hardware, budget_bytes=budget_bytes,
                           on_probe=lambda p: console.print(f"  probe micro-batch {p.micro_batch_size}: "
                                                            f"{'ok' if p.fits else 'out of memory'} ({p.seconds:.1f} s)"))
    return with_measured_micro_batch(run_plan, result)


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


def generate(run_dir: Path, prompts: list[str] | None = None, count: int = 5, max_new_tokens: int = 48,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             images: list[Path] | None = None) -> list[Generation]:
    """Generations from a trained run's adapter next to the base model's, with the chat
    template applied: greedy by default, seeded sampling when temperature > 0. Without
    prompts, uses the first validation samples of the run."""
    from peftstudio.export.infer import Sampling, load_run_model, run_prompts

    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise UserError(Problem("generate", f"temperature={temperature}, top_p={top_p}, max_new_tokens={max_new_tokens}",
                                "use temperature >= 0 (0 = greedy), 0 < top_p <= 1 and max_new_tokens >= 1"))
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    quiet_libraries(interactive=False)
    if images or _trained_on_images(Path(run_dir)):
        return _generate_with_images(Path(run_dir), prompts, images or [], count, sampling)
    model, tokenizer, config = load_run_model(Path(run_dir))
    expected: list[str | None]
    if prompts:
        expected = [None] * len(prompts)
    else:
        prompts, expected = _validation_prompts(config, count)
    return [Generation(p, e, base, tuned) for p, e, (base, tuned) in
            zip(prompts, expected, run_prompts(model, tokenizer, prompts, sampling))]


def _trained_on_images(run_dir: Path) -> bool:
    """Whether the run's plan recorded image-text data (plan.json's data.modality)."""
    from peftstudio.plan.runs import read_run

    record = read_run(run_dir, require_plan=True)
    return record.plan.data.modality == "image-text"


def _generate_with_images(run_dir: Path, prompts: list[str] | None, images: list[Path], count: int,
                          sampling) -> list[Generation]:
    """Image-text generation (export/vision_infer.py): the prompts with --image files, or the
    run's held-out image samples."""
    from peftstudio.export.vision_infer import checked_images, load_image_text_run, run_image_prompts, validation_samples

    refs = checked_images(images)  # before the model loads: a missing image is a user error
    model, processor, config = load_image_text_run(run_dir)
    if prompts:
        samples, expected = [(p, refs) for p in prompts], [None] * len(prompts)
    else:
        held_out = validation_samples(config, count)
        samples, expected = [(p, r) for p, r, _ in held_out], [e for _, _, e in held_out]
    return [Generation(p, e, base, tuned) for (p, _), e, (base, tuned) in
            zip(samples, expected, run_image_prompts(model, processor, config, samples, sampling))]


def _validation_prompts(config, count: int) -> tuple[list[str], list[str | None]]:
    from peftstudio.data.prepare import prepare_data

    data = prepare_data(config.data)
    rows = [r for r in data.validation_rows or data.train_rows if "prompt" in r][:count]
    return [r["prompt"][-1]["content"] for r in rows], [r["completion"][-1]["content"] for r in rows]


def evaluate(run_dir: Path, data: Path | None = None, metrics: list[str] | None = None, compare_base: bool = False,
             limit: int | None = None, max_new_tokens: int | None = None, lm_eval_tasks: list[str] | None = None,
             lm_eval_include: Path | None = None, lm_eval_limit: int | None = None):
    """Task metrics of a finished run's generated answers on any dataset (its validation split by
    default), the base model beside it with `compare_base`; lm-evaluation-harness tasks with
    `lm_eval_tasks` (local task YAML files under `lm_eval_include`)."""
    from peftstudio.evaluation import evaluate_run

    quiet_libraries(interactive=False)
    return evaluate_run(Path(run_dir), data, metrics, compare_base, limit, max_new_tokens, lm_eval_tasks,
                        lm_eval_include, lm_eval_limit)


def merge(run_dir: Path, out: Path, dtype: str = "fp32", overwrite: bool = False):
    """Merge a finished run's adapter into its full-precision base; a transformers model dir."""
    from peftstudio.export.merge import merge_run

    quiet_libraries(interactive=False)
    return merge_run(Path(run_dir), Path(out), dtype, overwrite)


def export(run_dir: Path, fmt: str, out: Path, quantize: str | None = None, overwrite: bool = False):
    """Hand a finished run to another runtime (merged transformers model, GGUF for llama.cpp and
    Ollama, adapter for vLLM), each checked before it is returned."""
    from peftstudio.export.handoff import export_run

    quiet_libraries(interactive=False)
    return export_run(Path(run_dir), fmt, Path(out), quantize, overwrite)


def preview_data(overrides: list[str] | None = None, config_file: Path | None = None, rows: int = 3) -> dict:
    """The first `rows` training samples as training will see them: token ids, text, and the
    trained spans (see data/preview.py), with how the template and pad token were chosen.
    Loads the tokenizer only, never the model."""
    from peftstudio.config.validate import load_config
    from peftstudio.data.prepare import prepare_data
    from peftstudio.data.preview import sample_previews
    from peftstudio.data.tokenizer import prepare_tokenizer

    from peftstudio.plan.pipeline import require_tokenizer_files

    config, _ = load_config(overrides, config_file)
    require_tokenizer_files(config, "preview-data")
    data = prepare_data(config.data)
    setup = prepare_tokenizer(config, data.format)
    return {"source": data.source, "format": data.format, "format_reason": data.format_reason,
            "template": setup.template_reason, "answer_spans": setup.chat.reason, "end_of_turn": setup.chat.end_of_turn,
            "pad_token": setup.pad_reason, "samples": sample_previews(config, data, setup, rows)}


def import_config(path: Path, dataset_info: Path | None = None, allow_changes: bool = False):
    """Convert a foreign config file (Axolotl, LLaMA-Factory, TRL/alignment-handbook, torchtune,
    HF TrainingArguments JSON, wizard JSON) into a validated peftstudio config; refused
    (ImportRefused, exit 2) where the run would differ, unless `allow_changes`."""
    from peftstudio.config.importers import import_file

    return import_file(Path(path), Path(dataset_info) if dataset_info else None, allow_changes)


def convert_config(source: Path, tool: str):
    """A peftstudio config (a file, or a run dir's resolved config and the data format its plan
    read) in another tool's format."""
    from peftstudio.config.importers.convert import convert, load

    source = Path(source)
    if source.is_dir():
        from peftstudio.plan.runs import read_run

        plan = read_run(source, require_plan=True).plan
        return convert(plan.config, tool, source.name, plan.data.format, plan.schedule.mode == "epochs")
    return convert(load(source), tool, source.name)


def diagnose(run_dir: Path):
    """Name the problems of a run from its metrics, resolved config, plan and log."""
    from peftstudio.diagnose.report import diagnose_run

    return diagnose_run(Path(run_dir))


def doctor(overrides: list[str] | None = None, config_file: Path | None = None,
           hardware: HardwareProfile | None = None, environ: dict[str, str] | None = None):
    """Check packages, accelerator, tokens, data, directories, disk and hyperparameters."""
    from peftstudio.doctor.report import run_doctor

    return run_doctor(overrides, config_file, hardware, environ)


def cost(run_plan: RunPlan, price_file: Path | None = None):
    """Time here and cost on rented GPUs that fit; None when the model's architecture numbers
    are not known offline (not a preset, a local dir, in the HF cache or in the catalogue)."""
    from peftstudio.plan.architecture import architecture_of
    from peftstudio.plan.cost import cost_report

    try:
        architecture_of(run_plan.config)
    except UserError:
        return None
    return cost_report(run_plan, price_file)


def launch(overrides: list[str] | None, config_file: Path | None, provider: str, gpu: str | None = None,
           spot: bool = False, bucket: str | None = None, out: Path = Path("sky-task.yaml"),
           price_file: Path | None = None, num_nodes: int = 1):
    """Write a SkyPilot task (and the config it runs) for `provider`; returns the command to start it."""
    from peftstudio.launch.prepare import prepare_launch

    return prepare_launch(list(overrides or []), config_file, provider, gpu, spot, bucket, Path(out), price_file,
                          num_nodes)
