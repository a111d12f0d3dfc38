"""How plans, explanations and results look in a terminal (rich)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from peftstudio.config.explain import Explanation, default_text
from peftstudio.config.introspect import flatten
from peftstudio.plan.evaluation import eval_notes
from peftstudio.plan.init_adapter import init_adapter_note
from peftstudio.plan.objectives import objective_notes
from peftstudio.plan.resolve import cpu_fast_paths
from peftstudio.plan.runplan import RunPlan
from peftstudio.units import GIB, format_gib


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def print_plan_summary(console: Console, plan: RunPlan) -> None:
    """The decisions that matter: what runs, where, how long, and why each auto went the way it did."""
    config, schedule, hardware = plan.config, plan.schedule, plan.hardware
    training = config.training
    memory = plan.memory or {}
    source = memory.get("architecture") or "unknown: no memory, time or cost estimate (see the warning)"
    console.print(f"[bold]model[/]     {config.model.name_or_path} (architecture: {source})")
    console.print(f"[bold]method[/]    {config.peft.method}  r={config.peft.r} alpha={config.peft.alpha:g} "
                  f"dropout={config.peft.dropout:g} targets={_value(config.peft.target_modules)}")
    if (start := init_adapter_note(config)) is not None:  # peft.init_adapter: an earlier run's adapter
        console.print(f"[bold]adapter[/]   {start}")
    for note in objective_notes(config):  # dpo / kto / grpo: trainer, reference model, groups, rewards
        console.print(f"[bold]objective[/] {note}")
    for note in eval_notes(config):  # eval.metrics and the best checkpoint's metric, with its direction
        console.print(f"[bold]eval[/]      {note}")
    print_data_summary(console, plan)
    epochs = schedule.optimizer_steps / schedule.steps_per_epoch
    console.print(f"[bold]schedule[/]  {schedule.optimizer_steps} optimizer steps (~{epochs:.1f} epochs), "
                  f"{schedule.mode}-based: {schedule.reason}")
    console.print(f"[bold]batch[/]     effective {schedule.effective_batch} = micro-batch {training.micro_batch_size} "
                  f"× accumulation {training.gradient_accumulation_steps} × {training.num_processes} process(es)")
    names = ", ".join(hardware.device_names) or "no accelerator"
    console.print(f"[bold]hardware[/]  {hardware.accelerator} ({names}); {hardware.cpu_cores} CPU cores, "
                  f"{format_gib(hardware.ram_bytes)} RAM, bf16 CPU units: {'yes' if hardware.cpu_bf16 else 'no'}")
    for note in cpu_fast_paths(config, hardware).values():
        console.print(f"[bold]kernels[/]   {note}")
    for key, decision in plan.chosen().items():
        console.print(f"[bold]{decision.origin:<9}[/] {key} = [green]{_value(decision.value)}[/]: {decision.reason}")
    console.print(f"[bold]outputs[/]   run dir {training.output_dir}, checkpoints {training.checkpoint_dir} "
                  f"(every {training.save_interval_steps} steps, keep {training.save_total_limit}), resume={training.resume}")
    if config.logging.trackio:  # where the local store is, since it may be shared or named by TRACKIO_DIR
        from peftstudio.track.runs import RunDir
        from peftstudio.track.trackio_sink import trackio_destination

        where = trackio_destination(config.logging.trackio_dir, RunDir.at(training.output_dir).root,
                                    config.logging.project or "peftstudio")
        console.print(f"[bold]trackio[/]   {escape(where)}")
    _print_memory(console, plan)
    for warning in plan.warnings:
        console.print(f"[yellow]warning[/]   {warning}")


def print_data_summary(console: Console, plan: RunPlan) -> None:
    """Rows, token lengths, padding, over-limit samples, chat template and pad token."""
    data, training = plan.data, plan.config.training
    console.print(f"[bold]data[/]      {data.source}: format {data.format} ({data.format_reason}); "
                  f"{data.train_rows} train / {data.validation_rows} validation rows ({data.split_reason})")
    lengths = data.token_lengths
    kind = "tokens" if data.tokens_measured else "tokens, estimated"
    console.print(f"[bold]tokens[/]    length p50 {lengths.get('p50')} / p90 {lengths.get('p90')} / p99 {lengths.get('p99')} "
                  f"/ max {lengths.get('max')} ({kind}); padding waste {data.padding_waste:.1%} at micro-batch "
                  f"{training.micro_batch_size}; {data.over_limit} over max_seq_length={training.max_seq_length} "
                  f"(data.overlong={data.overlong})"
                  + (f"; {data.masked_dropped} left out with no label" if data.masked_dropped else ""))
    if data.modality != "text" or data.modality_reason:
        console.print(f"[bold]modality[/]  {data.modality}: {data.modality_reason}")
    if data.images:
        from peftstudio.plan.vision_memory import describe_images

        console.print(f"[bold]images[/]    {describe_images(plan)}")
    if data.chat_template:
        console.print(f"[bold]template[/]  {data.chat_template}; loss on {_loss_on(plan)}")
    if data.added_tokens:
        console.print(f"[bold]vocab[/]     data.add_special_tokens=true adds {len(data.added_tokens)} token(s) "
                      f"({', '.join(data.added_tokens)}): {_embedding_cost(plan)}")
    if data.pad_token:
        console.print(f"[bold]pad[/]       {data.pad_token}")


def _embedding_cost(plan: RunPlan) -> str:
    from peftstudio.plan.architecture import architecture_of

    arch = architecture_of(plan.config)
    # peft saves the input embedding and the output head as two matrices, tied or not.
    size = arch.vocab_size * arch.hidden_size * 2 * (2 if plan.config.training.precision in ("bf16", "fp16") else 4)
    tied = " (tied: they train as one)" if arch.tie_embeddings else ""
    return f"the embedding matrix and output head ({arch.vocab_size} x {arch.hidden_size}){tied} train in full and are " \
           f"saved with the adapter: {size / 2**20:,.1f} MiB more per checkpoint"


def _loss_on(plan: RunPlan) -> str:
    data, config = plan.data, plan.config
    if data.format == "text" or config.training.loss_on == "all":
        return "every token" + (" (text data has no prompt)" if data.format == "text" else " (training.loss_on=all)")
    if data.format in ("chat", "sharegpt"):
        turns = "every assistant turn" if config.data.train_on_turns == "all" else "the last assistant turn"
        return f"{turns} and its end-of-turn token, nothing else: {data.answer_spans}"
    return "the answers only (training.loss_on=completion)" + (f": {data.answer_spans}" if data.answer_spans else "")


def _print_memory(console: Console, plan: RunPlan) -> None:
    memory = plan.memory or {}
    estimate = memory.get("estimate")
    if not estimate:
        return
    parts = ", ".join(f"{name} {value / GIB:.2f}" for name, value in estimate["components"].items())
    device = memory["device_bytes"]
    verdict = ("" if not device else (" [green]fits[/]" if memory["fits"] else " [red]does not fit[/]")
               + f" in {format_gib(device)}")
    console.print(f"[bold]memory[/]    predicted peak {format_gib(estimate['total_bytes'], 2)}{verdict} "
                  f"(micro-batch {estimate['micro_batch_size']}, sequence {estimate['seq_len']}): {parts} GiB")
    for note in estimate.get("notes", []):  # what the estimate assumes about how the stack holds memory
        console.print(f"[dim]memory    {note}[/]")
    if memory.get("recommended_micro_batch"):
        console.print(f"[bold]memory[/]    largest micro-batch predicted to fit: {memory['recommended_micro_batch']} "
                      "(peftstudio find-batch-size measures it)")
    _print_strategies(console, plan, memory)


def _print_strategies(console: Console, plan: RunPlan, memory: dict) -> None:
    """Per-device memory under each way to spread the run (plan/strategy_memory.py), shown when
    the run is spread or does not fit one device."""
    strategies, recommended = memory.get("strategies") or {}, memory.get("recommended_strategy")
    if not strategies or (plan.config.training.num_processes == 1 and memory.get("fits") is not False):
        return
    rows = "; ".join(f"{name} {format_gib(item['total_bytes'], 2)}"
                     + (f" (+{format_gib(item['host_bytes'], 2)} CPU RAM)" if item["host_bytes"] else "")
                     for name, item in strategies.items())
    console.print(f"[bold]strategy[/]  per device on {plan.config.training.num_processes}: {rows}")
    if recommended:
        chosen = plan.config.training.distributed
        console.print(f"[bold]strategy[/]  recommended {recommended['reason']}"
                      + (f" (this run: training.distributed={chosen})" if recommended["strategy"] != chosen else ""))


def print_plan(console: Console, plan: RunPlan) -> None:
    """The summary, then every resolved key with its value and origin."""
    table = Table(title="resolved config", show_lines=False, header_style="bold")
    table.add_column("key", overflow="fold")
    table.add_column("value", overflow="fold")
    table.add_column("origin", overflow="fold", style="dim")
    for key, decision in plan.decisions.items():
        table.add_row(key, _value(decision.value), decision.describe())
    console.print(table)
    print_plan_summary(console, plan)


def print_explanation(console: Console, explanation: Explanation) -> None:
    field = explanation.doc
    if field is not None and not field.is_section:
        console.print(f"[bold]{explanation.key}[/]  ({field.type_text})")
        console.print(f"  {escape(field.description)}")  # docs hold YAML lists: [strip, lower] is no markup
        console.print(f"  default: {escape(default_text(field.default))}")
        if field.range_text:
            console.print(f"  allowed: {field.range_text}")
        if field.memory_note:
            console.print(f"  memory: {field.memory_note}")
        for option, value in explanation.set_by.items():
            console.print(f"  set by {option}: {_value(value)}")
        return
    if field is not None:
        console.print(f"[bold]{explanation.key}[/]: {escape(field.description)}")
    if explanation.children:
        table = Table(header_style="bold")
        for column in ("key", "type", "default", "allowed", "meaning"):
            table.add_column(column, overflow="fold")
        for child in explanation.children:
            table.add_row(child.key, child.type_text, escape(default_text(child.default)), child.range_text,
                          escape(child.description))
        console.print(table)
    for option in explanation.options:
        console.print(f"[bold]{explanation.key.split('=')[0]}={option.name}[/]  {option.summary}")
        if "=" in explanation.key:
            for key, value in flatten(option.sets).items():
                console.print(f"  {key}: {_value(value)}")


def print_detection(console: Console, detection) -> None:
    """The hardware profile, then each recommendation with its reason."""
    hardware = detection.hardware
    if hardware.accelerator == "cpu":
        console.print("[bold]accelerator[/]  none (CPU only)")
    for index, name in enumerate(hardware.device_names):
        total = hardware.device_memory_bytes[index] / GIB if index < len(hardware.device_memory_bytes) else 0
        free = hardware.device_free_memory_bytes[index] / GIB if index < len(hardware.device_free_memory_bytes) else None
        free_text = f", {free:.1f} GiB free" if free is not None else ""
        console.print(f"[bold]{hardware.accelerator}:{index}[/]       {name}: {total:.1f} GiB{free_text}")
    if hardware.accelerator != "cpu":
        console.print(f"[bold]compute[/]      capability {hardware.compute_capability or 'n/a'}, "
                      f"bf16 {'yes' if hardware.gpu_bf16 else 'no'}")
    console.print(f"[bold]libraries[/]    flash-attn {'installed' if hardware.flash_attention_available else 'not installed'}, "
                  f"bitsandbytes {'installed' if hardware.bitsandbytes_available else 'not installed'}")
    flags = ", ".join(hardware.cpu_bf16_flags) or "none"
    console.print(f"[bold]cpu[/]          {hardware.cpu_name or 'unknown'}: {hardware.cpu_cores} cores, bf16 matrix flags: {flags}")
    console.print(f"[bold]memory[/]       {format_gib(hardware.ram_bytes)} RAM ({format_gib(hardware.ram_available_bytes)} available), "
                  f"{format_gib(hardware.disk_free_bytes)} free disk at the output dir")
    for item in detection.recommendations:
        console.print(f"[bold]recommended[/]  {item.key} = [green]{item.value}[/]: {item.reason}")


def print_estimates(console: Console, result) -> None:
    """One column per micro-batch size, one row per memory component, then total and fit."""
    first = result.estimates[0]
    device = result.device_bytes
    console.print(f"[bold]model[/] {result.config.model.name_or_path}: {first.total_parameters:,} parameters, "
                  f"{first.trainable_parameters:,} trainable ({first.trainable_parameters / first.total_parameters:.2%}); "
                  f"sequence {first.seq_len}, {result.config.training.precision}, attention {result.config.training.attention}, "
                  f"gradient checkpointing {result.config.training.gradient_checkpointing}")
    table = Table(header_style="bold", title=f"predicted peak memory (GiB) on {result.config.device}, "
                                             f"compared with {format_gib(device)} per device")
    table.add_column("component", no_wrap=True)
    for item in result.estimates:
        table.add_column(f"micro-batch {item.micro_batch_size}", justify="right")
    for name in first.components:
        table.add_row(name, *(f"{item.components[name] / GIB:.2f}" for item in result.estimates))
    table.add_row("[bold]total[/]", *(f"[bold]{item.total_bytes / GIB:.2f}[/]" for item in result.estimates))
    table.add_row("fits", *("[green]yes[/]" if item.fits(device) else "[red]no[/]" for item in result.estimates))
    console.print(table)
    for note in first.notes:
        console.print(f"[dim]note: {note}[/]")


def print_cost(console: Console, report) -> None:
    """Time on this machine, then the rented GPUs that fit in memory, cheapest first."""
    from peftstudio.plan.cost import fmt_hours

    work, local = report.workload, report.local
    console.print(f"[bold]work[/]      {work.sequences} sequences × ~{work.tokens_per_sequence:.0f} tokens = "
                  f"{work.trained_tokens / 1e6:.2f} M tokens")
    speed = f"{local.tokens_per_second:,.0f} tokens/s" if local.tokens_per_second else "speed unknown"
    console.print(f"[bold]time[/]      here ({local.device}): {fmt_hours(local.hours)} at {speed} ({local.basis})")
    if not report.options:
        console.print("[yellow]cost[/]      no GPU in the price file fits this run in memory")
        return
    table = Table(title=f"time and cost on rented GPUs that fit (prices {report.prices_updated})", header_style="bold")
    for column in ("provider", "GPU", "memory GiB", "peak GiB", "tokens/s", "time", "cost US$"):
        table.add_column(column, overflow="fold")
    for option in report.options:
        cost = f"{option.cost_low:.2f}" if option.cost_low == option.cost_high else f"{option.cost_low:.2f}–{option.cost_high:.2f}"
        table.add_row(option.provider, option.gpu, f"{option.memory_gib:g}", f"{option.peak_memory_gib:.1f}",
                      f"{option.tokens_per_second:,.0f}", fmt_hours(option.hours), cost)
    console.print(table)
    if report.too_small:
        console.print(f"[dim]too small for this run: {', '.join(report.too_small)}[/]")
    for line in report.assumptions:
        console.print(f"[dim]assumes   {line}[/]")


def print_data_preview(console: Console, preview: dict) -> None:
    """Samples with the trained spans in green and the ignored text dimmed (truncated: red)."""
    from rich.text import Text

    console.print(f"[bold]data[/]      {preview['source']}: format {preview['format']} ({preview['format_reason']})")
    console.print(f"[bold]template[/]  {preview['template']}; {preview['answer_spans']}")
    console.print(f"[bold]pad[/]       {preview['pad_token']}")
    console.print("[dim]dim: not trained[/]  [bold green]green: trained[/]  [red]red: cut by max_seq_length[/]\n")
    for sample in preview["samples"]:
        text = Text()
        for run in sample["runs"]:
            style = "red" if run["truncated"] else "bold green" if run["trained"] else "dim"
            text.append(run["text"], style=style)
        console.print(f"[bold]{sample['where']}[/] ({len(sample['input_ids'])} tokens)")
        console.print(text)
        console.print(f"[bold]trained[/]   {sample['trained_spans']}\n")


def print_evaluation(console: Console, result) -> None:
    """`evaluate`: one row per metric, base and adapter side by side, then lm-eval's numbers."""
    from rich.table import Table

    def shown(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    console.print(f"[bold]evaluate[/]  {result.rows} rows of {result.data}; predictions in {result.predictions}")
    table = Table("metric", *(["base"] if result.base is not None else []), "adapter",
                  *(["Δ"] if result.base is not None else []))
    for key in result.metrics:
        tuned = result.adapter.get(key)
        if result.base is None:
            table.add_row(key, shown(tuned))
            continue
        base = result.base.get(key)
        delta = f"{tuned - base:+.4f}" if tuned is not None and base is not None else "n/a"
        table.add_row(key, shown(base), shown(tuned), delta)
    console.print(table)
    for task, values in (result.lm_eval or {}).items():
        console.print(f"[bold]lm-eval[/]   {task}: " + ", ".join(f"{name} {value:.4f}" for name, value in values.items()))
