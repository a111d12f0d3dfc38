"""Sweep files are validated before any trial: shape, parameter keys, and every value."""

import pytest

from peftstudio.config.overrides import override_text
from peftstudio.errors import UserError
from peftstudio.sweep.spec import load_sweep

GOOD = """
method: grid
metric: {name: eval/loss, goal: minimize}
parameters:
  optim.learning_rate: {values: [0.001, 0.005]}
  peft: {values: [lora, dora]}
base: {training.num_batches: 4, data.max_samples: 40}
"""


def sweep_file(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_good_grid_file_loads(tmp_path):
    spec = load_sweep(sweep_file(tmp_path, GOOD))
    assert spec.grid_size() == 4
    assert spec.base_overrides() == ["training.num_batches=4", "data.max_samples=40"]


@pytest.mark.parametrize("text, named", [
    (GOOD.replace("method: grid", "method: hyperband"), "method"),
    (GOOD + "trials: 3\n", "trials"),
    (GOOD.replace("optim.learning_rate", "optim.lr"), "parameters.optim.lr"),
    (GOOD.replace("[0.001, 0.005]", "[0.001, 5.0]"), "parameters.optim.learning_rate"),
    (GOOD.replace("{values: [0.001, 0.005]}", "{distribution: log_uniform_values, min: 0.001, max: 0.01}"),
     "method grid needs `values`"),
    (GOOD.replace("{values: [lora, dora]}", "{distribution: uniform, min: 2, max: 1}"), "parameters.peft"),
    (GOOD.replace("training.num_batches: 4", "training.num_batchez: 4"), "training.num_batchez"),
    (GOOD.replace("name: eval/loss", "name: eval/accuracy"), "metric.name"),
])
def test_invalid_files_name_the_key(tmp_path, text, named):
    with pytest.raises(UserError) as error:
        load_sweep(sweep_file(tmp_path, text))
    assert named in error.value.render()


def test_override_text_quotes_what_the_grammar_needs():
    assert override_text("peft.target_modules", ["q_proj", "v_proj"]) == "peft.target_modules=[q_proj,v_proj]"
    assert override_text("training.output_dir", "/tmp/a b/run") == "training.output_dir='/tmp/a b/run'"
    assert override_text("training.early_stopping_patience", None) == "training.early_stopping_patience=null"
