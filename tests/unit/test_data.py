"""Data checks: each problem is a user error with file:line and a fix, before training."""

import json

import pytest

from peftstudio.build.data import prepare_data
from peftstudio.config.schema import DataSettings
from peftstudio.errors import UserError


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def prepared(path, **settings):
    return prepare_data(DataSettings(path=str(path), **settings))


def error_text(path, **settings) -> str:
    with pytest.raises(UserError) as caught:
        prepared(path, **settings)
    return caught.value.render()


def test_bundled_sample_is_instruction_data():
    data = prepare_data(DataSettings())
    assert data.format == "instruction" or data.format == "auto"
    assert len(data.train_rows) > 400 and len(data.validation_rows) > 40
    row = data.train_rows[0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"


@pytest.mark.parametrize("record,expected", [
    ({"instruction": "a", "input": "", "output": "b"}, "instruction"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "chat"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion"),
    ({"text": "hello"}, "text"),
])
def test_format_detection(tmp_path, record, expected):
    data = prepared(write_lines(tmp_path / "d.jsonl", [record] * 20))
    assert data.format == expected and "detected" in data.format_reason


def test_invalid_json_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": "a"}, "{not json", {"text": "b"}])
    assert f"{path}:2: invalid JSON" in error_text(path)


def test_missing_column_names_the_closest(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"instruction": "a", "outputs": "b"}] * 3)
    text = error_text(path, format="instruction")
    assert f"{path}:1: missing column 'output'" in text and "closest: 'outputs'" in text
    assert "data.columns={output: outputs}" in text


def test_column_mapping(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}] * 10)
    data = prepared(path, format="prompt_completion", columns={"prompt": "question", "completion": "answer"})
    assert data.train_rows[0]["completion"][0]["content"] == "a"


def test_empty_text_and_wrong_type(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": "  "}, {"text": 5}])
    text = error_text(path)
    assert f"{path}:2: column 'text' is empty" in text and f"{path}:3: column 'text' must be text" in text


def test_non_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert f"{path}:2: not UTF-8" in error_text(path)


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "d.jsonl"
    empty.write_text("\n")
    assert "the file is empty" in error_text(empty)
    assert "data file not found" in error_text(tmp_path / "nope.jsonl")


def test_split_that_leaves_no_validation_rows(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": "a"}] * 3)
    assert "leaves no validation rows" in error_text(path, validation_split=0.1)
    assert len(prepared(path, validation_split=0.0).train_rows) == 3


def test_chat_without_assistant(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "a"}]}] * 3)
    assert "no assistant message" in error_text(path)


def test_split_is_deterministic(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(50)])
    assert prepared(path).train_rows == prepared(path).train_rows
    assert prepared(path).train_rows != prepared(path, shuffle_seed=1).train_rows
