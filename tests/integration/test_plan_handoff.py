"""`peftstudio plan --out FILE` then `peftstudio train --plan FILE`: the saved plan is what runs."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
RUN = ["training.num_batches=3", "training.save_interval_steps=3", "training.eval_interval_steps=3",
       "data.max_samples=40"]


def test_a_saved_plan_is_executed_exactly_and_refused_once_the_data_changed(model_cache, tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Repeat {n}", "input": "", "output": str(n)} for n in range(40)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    planned = run_cli("plan", *RUN, "data=jsonl", f"data.path={data}", "--out", "plans/new/plan.json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "plan saved to plans/new/plan.json" in planned.stderr, "the folder is created"
    (tmp_path / "plans/new/plan.json").rename(tmp_path / "plan.json")

    mixed = run_cli("train", "--plan", "plan.json", "peft.r=4", cwd=tmp_path)
    assert mixed.returncode == 2 and "cannot change it" in mixed.stderr

    trained = run_cli("train", "--plan", "plan.json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "done at step 3" in trained.stdout
    saved, written = (json.loads(p.read_text()) for p in (tmp_path / "plan.json", tmp_path / "outputs/plan.json"))
    assert written == saved, "the run dir keeps the plan that was executed"

    data.write_text(data.read_text().replace('"Repeat 7"', '"Repeat seven"'))
    changed = run_cli("train", "--plan", "plan.json", "--debug", cwd=tmp_path)
    assert changed.returncode != 0
    changed = run_cli("train", "--plan", "plan.json", cwd=tmp_path)
    assert changed.returncode == 2 and "the data changed since it was planned" in changed.stderr
    assert "Traceback" not in changed.stderr
