"""The GPU throughput model against training speeds other projects measured and published
(tests/data/published_throughput.json: every row with its settings, stack and source).

plan/providers.yaml's efficiencies come from the rows marked fitted (the run on the stack the
pins match, LoRA and DoRA); every other row is held against them: other ranks, rsLoRA, MLP-only
targets, and the same runs on two earlier stacks.

    PYTHONPATH=src:. python -m tests.unit.test_published_throughput    # prints the table
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from peftstudio.config.validate import load_config
from peftstudio.plan.cost import run_efficiency
from peftstudio.plan.prices import load_prices
from peftstudio.plan.resolve import resolve
from peftstudio.plan.throughput import flops_per_token, tokens_per_second
from tests.conftest import H100

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "published_throughput.json"
FITTED, HELD_MEDIAN, HELD_EACH = 0.01, 0.08, 0.20


def predicted(row: dict, architecture: dict) -> float:
    """Non-padding tokens/s the shipped price file and the FLOP count give for one row."""
    targets = "[" + ",".join(row["targets"]) + "]"
    overrides = [f"model.name_or_path=published/{row['model']}"]
    overrides += [f"model.architecture.{key}={value}" for key, value in architecture.items()]
    overrides += [f"peft={row['method']}", f"peft.r={row['r']}", f"peft.alpha={2 * row['r']}",
                  f"peft.target_modules={targets}", f"peft.dropout={row['dropout']}",
                  f"training.max_seq_length={row['max_seq']}", f"training.micro_batch_size={row['batch']}",
                  f"training.gradient_checkpointing={row['checkpointing']}", f"training.precision={row['precision']}"]
    config = resolve(load_config(overrides)[0], H100, None).config
    prices = load_prices()
    flops = flops_per_token(config, round(row["mean_tokens"]))
    return tokens_per_second(flops, prices.gpus[row["gpu"]].peak_tflops, run_efficiency(prices, config))


def errors() -> dict[str, tuple[str, float]]:
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    architectures = json.loads((DATA / "published_memory.json").read_text(encoding="utf-8"))["architectures"]
    return {row["id"]: (row["role"], predicted(row, architectures[row["model"]]) / row["tokens_per_second"] - 1)
            for row in fixture["rows"]}


def test_rows_say_what_the_flop_count_reads_and_where_they_come_from():
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    needed = {"id", "model", "method", "r", "targets", "batch", "max_seq", "mean_tokens", "checkpointing", "precision",
              "gpu", "tokens_per_second", "logs", "role", "stack", "path", "commit"}
    for row in fixture["rows"]:
        assert needed <= row.keys(), row["id"]
        assert len(row["commit"]) == 40 and row["path"].endswith(".json"), row["id"]
    assert fixture["source"]["url"].startswith("https://github.com/huggingface/peft")
    assert {row["method"] for row in fixture["rows"] if row["role"] == "fitted"} == {"lora", "dora"}


def test_the_shipped_efficiencies_reproduce_the_runs_they_cite_and_hold_the_others():
    table = errors()
    fitted = [error for role, error in table.values() if role == "fitted"]
    held = [error for role, error in table.values() if role == "held"]
    assert len(fitted) == 2 and len(held) >= 10
    assert all(abs(error) <= FITTED for error in fitted), table
    assert statistics.median(abs(error) for error in held) <= HELD_MEDIAN, table
    assert all(abs(error) <= HELD_EACH for error in held), table


@pytest.mark.parametrize("overrides, expected", [
    (["peft=lora"], 0.259), (["peft=rslora"], 0.259), (["peft=pissa"], 0.259), (["peft=dora"], 0.213),
    (["peft=qlora"], 0.166), (["peft=qdora"], 0.213 * 0.166 / 0.259), (["peft=lora", "peft.quantization=int8"], 0.259),
    (["peft=lora", "peft.use_dora=true"], 0.213)])  # DoRA as the run builds it, whatever the method's name
def test_each_method_reads_its_own_efficiency(overrides, expected):
    config = resolve(load_config(["model=llama3_8b", *overrides])[0], H100, None).config
    assert run_efficiency(load_prices(), config) == pytest.approx(expected)


if __name__ == "__main__":
    for key, (role, error) in errors().items():
        print(f"{key:40s} {role:6s} {error:+.1%}")
