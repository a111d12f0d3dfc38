"""Override values in Hydra's grammar: what goes in comes back out of the parser unchanged."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from peftstudio.config.overrides import override_text, quoted


def parsed(override: str):
    return OverridesParser.create().parse_overrides([override])[0].value()


@pytest.mark.parametrize("value", [True, False, None, 8, 2e-4, "q_proj", "adamw_torch", "/tmp/a b/run",
                                   "it's", "C:\\data\\rows.jsonl", "end\\", "x\\'y", "a,b", "[x]", ["q_proj", "v_proj"], [1, 2]])
def test_override_text_round_trips_through_the_parser(value):
    assert parsed(override_text("key", value)) == value


@pytest.mark.parametrize("text", ["true", "null", "8", "1e-4", "a b", "it's", "${oc.env:HOME}", "a\\b", "a\\\\'b\\"])
def test_quoted_text_stays_that_string(text):
    assert parsed(f"key={quoted(text)}") == text


def test_plain_words_stay_unquoted():
    assert override_text("peft.target_modules", ["q_proj", "v_proj"]) == "peft.target_modules=[q_proj,v_proj]"
    assert override_text("training.output_dir", "/tmp/a b/run") == "training.output_dir='/tmp/a b/run'"
