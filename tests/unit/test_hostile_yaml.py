"""Hostile config files are refused before they are built, fast, by the CLI and the studio alike."""

import time

import pytest

from peftstudio.config.compose import MAX_YAML_BYTES
from peftstudio.config.validate import load_config
from peftstudio.errors import UserError

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
# Few aliases, each doubling: 2^40 values from 41 lines.
DOUBLING = "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 41))
DEEP = "x: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_MAP = "".join(" " * i + f"k{i}:\n" for i in range(500)) + " " * 500 + "v\n"
HOSTILE = {"billion laughs": (LAUGHS, "expands to more than"), "doubling aliases": (DOUBLING, "expands to more than"),
           "deep list": (DEEP, "nested more than"), "deep mapping": (DEEP_MAP, "nested more than")}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_config_files_exit_2_in_well_under_a_second(tmp_path, kind):
    text, words = HOSTILE[kind]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(UserError) as caught:
        load_config([], path)
    assert time.perf_counter() - started < 1.0
    assert caught.value.exit_code == 2 and words in caught.value.render() and str(path) in caught.value.render()


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    with pytest.raises(UserError) as caught:
        load_config([], path)
    assert "larger than a config file can be" in caught.value.render()


def test_ordinary_anchors_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("optim: &o {learning_rate: 0.0005}\ntraining:\n  log_interval_steps: &n 3\n  eval_interval_steps: *n\n")
    config, _ = load_config([], path)
    assert config.training.eval_interval_steps == 3 and config.optim.learning_rate == 0.0005

