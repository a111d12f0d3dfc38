"""Time and cost: the throughput model and the price table against figures computed by hand."""

import json

import pytest
import yaml

from peftstudio import api
from peftstudio.errors import UserError
from peftstudio.plan.cost import cost_report, workload
from peftstudio.plan.prices import SHIPPED_PRICE_FILE, load_prices
from tests.conftest import H100

PRICES = {
    "updated": "2026-11-01", "efficiency": {"default": 0.5, "quantized_4bit": 0.25, "cpu": 0.5},
    "cpu_gflops_per_core": 50,
    "gpus": {"H100": {"memory_gib": 80, "peak_tflops": 1000, "skypilot": "H100", "match": ["H100"]},
             "T4": {"memory_gib": 16, "peak_tflops": 65, "bf16": False, "skypilot": "T4", "match": ["T4"]}},
    "providers": {"cloud_a": {"H100": [2.0, 3.0], "T4": [0.1, 0.2]}, "cloud_b": {"H100": [1.5, 1.5]}},
}
RUN = ["model=llama3_8b", "training.gradient_checkpointing=off", "training.max_seq_length=512",
       "training.micro_batch_size=2", "training.num_batches=10"]

# Llama 3.1 8B by hand. Linear weights per block: q 4096², k and v 4096×1024, o 4096²,
# gate/up/down 4096×14336 each; 32 blocks, plus the 4096×128256 head.
LINEAR = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 4096 * 128256
# LoRA r=16 on all seven projections: r × (in + out) each.
ADAPTER = 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024) + 3 * (4096 + 14336))


@pytest.fixture()
def price_file(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(PRICES))
    return path


def test_cost_table_matches_hand_computed_figures(price_file, tmp_path):
    plan = api.plan(RUN + [f"training.output_dir={tmp_path}/out"], hardware=H100)
    report = cost_report(plan, price_file)
    work = report.workload
    assert work.sequences == 10 * 2
    seq = work.seq_len
    flops = 4 * LINEAR + 6 * ADAPTER + 12 * 32 * seq * 4096 * 0.5
    speed = 1000e12 * 0.5 / flops
    hours = work.trained_tokens / speed / 3600
    assert LINEAR == 7_504_658_432 and ADAPTER == 41_943_040
    assert [(o.provider, o.gpu) for o in report.options] == [("cloud_b", "H100"), ("cloud_a", "H100")], "cheapest first"
    cheapest, other = report.options
    # tokens/s as train logs them: the padding the batches compute on is not counted, the time covers it
    useful = work.sequences * min(plan.data.mean_tokens, 512)
    assert work.useful_tokens == pytest.approx(useful) and 0 < useful < work.trained_tokens
    assert cheapest.tokens_per_second == pytest.approx(speed * useful / work.trained_tokens, rel=1e-9)
    assert cheapest.hours == pytest.approx(hours, rel=1e-9)
    assert cheapest.tokens_per_second * cheapest.hours * 3600 == pytest.approx(useful)
    assert cheapest.cost_low == pytest.approx(hours * 1.5) and other.cost_high == pytest.approx(hours * 3.0)
    assert report.too_small == ["cloud_a/T4"], "an 8B model in bf16 does not fit 16 GiB"
    assert report.local.tokens_per_second == pytest.approx(speed * useful / work.trained_tokens)
    assert report.local.basis.startswith("model: H100")
    assert any(line.startswith("tokens/s count non-padding tokens") for line in report.assumptions)


def test_gradient_checkpointing_adds_a_forward_pass(price_file, tmp_path):
    off = cost_report(api.plan(RUN + [f"training.output_dir={tmp_path}/o"], hardware=H100), price_file)
    on = cost_report(api.plan(RUN + [f"training.output_dir={tmp_path}/o", "training.gradient_checkpointing=on"],
                              hardware=H100), price_file)
    seq = off.workload.seq_len
    base = 4 * LINEAR + 6 * ADAPTER + 12 * 32 * seq * 4096 * 0.5
    extra = 2 * LINEAR + 2 * ADAPTER + 12 * 32 * seq * 4096 * 0.5 / 3
    assert off.local.tokens_per_second / on.local.tokens_per_second == pytest.approx((base + extra) / base)


def test_a_previous_runs_measured_speed_is_used_and_named(price_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous = api.plan(RUN + [f"training.output_dir={out}"], hardware=H100)
    (out / "plan.json").write_text(previous.to_json())
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0, "tokens_per_second": t}) + "\n"
                                               for s, t in [(10, 50.0), (20, 1000.0), (30, 1200.0), (40, 1100.0)]))
    report = cost_report(api.plan(RUN + [f"training.output_dir={out}"], hardware=H100), price_file)
    assert report.local.tokens_per_second == 1100.0, "median after the warm-up log"
    assert report.local.basis.startswith("measured: median of 3 logs")


def test_shipped_price_file_is_valid_and_dated():
    prices = load_prices()
    assert {"runpod", "lambda", "vast"} <= set(prices.providers) and prices.updated.year >= 2025
    assert prices.gpu_for_device("NVIDIA H100 80GB HBM3") == "H100" and prices.gpu_for_device("Tesla T4") == "T4"
    assert SHIPPED_PRICE_FILE.name == "providers.yaml"


def test_bad_price_file_names_the_key(price_file):
    broken = dict(PRICES, providers={"cloud_a": {"H1000": [1.0, 2.0]}})
    price_file.write_text(yaml.safe_dump(broken))
    with pytest.raises(UserError, match="providers.cloud_a.H1000: unknown GPU type"):
        _fresh(price_file)


def _fresh(path):
    from peftstudio.plan.prices import _load

    _load.cache_clear()
    return load_prices(path)


@pytest.mark.parametrize("objective,trained,policy_forwards,reference_forwards",
                         [("sft", 1, 0, 0), ("orpo", 2, 0, 0), ("dpo", 2, 0, 2), ("kto", 1, 1, 2)])
def test_preference_objectives_count_every_sequence_their_step_runs(objective, trained, policy_forwards,
                                                                    reference_forwards, tmp_path):
    """Per token trained: DPO and ORPO train the chosen and the rejected sequence of a pair, DPO
    scores both with the adapter-disabled reference, KTO adds its KL batch through policy and
    reference; the work counts both sequences of a pair, as a run logs them."""
    from peftstudio.config.validate import load_config
    from peftstudio.plan.resolve import resolve
    from peftstudio.plan.throughput import flops_per_token

    config = resolve(load_config(RUN + [f"objective={objective}"])[0], H100, None).config
    seq = 512
    attention = 12 * 32 * seq * 4096 * 0.5
    one = 4 * LINEAR + 6 * ADAPTER + attention
    forward = 2 * LINEAR + attention / 3
    expected = one + (policy_forwards * (forward + 2 * ADAPTER) + reference_forwards * forward) / trained
    assert flops_per_token(config, seq).total == pytest.approx(expected, rel=1e-12)
    plan = api.plan(RUN + [f"objective={objective}", f"training.output_dir={tmp_path}/out"], hardware=H100)
    assert workload(plan).sequences == 10 * 2 * trained
    said = [line for line in cost_report(plan).assumptions if line.startswith(f"{objective.upper()}: each row is ")]
    assert said == ([] if objective == "sft" else [said[0]]), "plan says what a preference row computes"
    if said:
        assert said[0].startswith(f"{objective.upper()}: each row is {trained} sequence")
        assert ("through the reference" in said[0]) == bool(reference_forwards)
        assert ("through the policy without gradients" in said[0]) == bool(policy_forwards)
