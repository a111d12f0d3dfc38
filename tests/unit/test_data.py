"""Data sources and formats: every source × format read from a file made here, and every
data problem a user error with file:line, the bad value and the fix, before training."""

import csv
import json

import pytest

from peftstudio.data.prepare import prepare_data
from peftstudio.config.schema import DataSettings
from peftstudio.errors import UserError

INSTRUCTION = {"instruction": "Say hi", "input": "", "output": "hi"}
CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
                     {"role": "assistant", "content": "b"}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
PROMPT_COMPLETION = {"prompt": "a", "completion": "b"}
TEXT = {"text": "hello"}
EXPECTED_SHAPE = {"instruction": "prompt", "chat": "messages", "sharegpt": "messages",
                  "prompt_completion": "prompt", "text": "text"}


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def numbered(record, count=20):
    """`count` distinct copies of a record, so shuffling and splitting are visible."""
    rows = []
    for index in range(count):
        row = json.loads(json.dumps(record))
        for key in ("output", "completion", "text"):
            if key in row:
                row[key] += f" {index}"
        rows.append(row)
    return rows


def write_source(tmp_path, kind, records):
    if kind == "jsonl":
        return write_lines(tmp_path / "d.jsonl", records)
    if kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(records, indent=2))
        return path
    if kind == "csv":
        path = tmp_path / "d.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        return path
    from datasets import Dataset

    dataset = Dataset.from_list(records)
    if kind == "parquet":
        dataset.to_parquet(str(tmp_path / "d.parquet"))
        return tmp_path / "d.parquet"
    dataset.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def prepared(path, **settings):
    return prepare_data(DataSettings(path=str(path), **settings))


def error_text(path, **settings) -> str:
    with pytest.raises(UserError) as caught:
        prepared(path, **settings)
    assert caught.value.exit_code == 2
    return caught.value.render()


def test_bundled_sample_is_instruction_data():
    data = prepare_data(DataSettings())
    assert data.format == "instruction"
    assert len(data.train_rows) > 400 and len(data.validation_rows) > 40
    row = data.train_rows[0]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    assert data.train_where[0].startswith(data.source + ":")


@pytest.mark.parametrize("record,expected", [
    (INSTRUCTION, "instruction"), (CHAT, "chat"), (SHAREGPT, "sharegpt"),
    (PROMPT_COMPLETION, "prompt_completion"), (TEXT, "text"),
])
@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "dataset_dir"])
def test_every_format_from_every_source(tmp_path, kind, record, expected):
    data = prepared(write_source(tmp_path, kind, numbered(record)))
    assert data.format == expected and "detected" in data.format_reason
    assert len(data.train_rows) == 18 and len(data.validation_rows) == 2
    assert EXPECTED_SHAPE[expected] in data.train_rows[0]
    if expected == "sharegpt":
        assert [m["role"] for m in data.train_rows[0]["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("record,expected", [(INSTRUCTION, "instruction"), (PROMPT_COMPLETION, "prompt_completion"),
                                             (TEXT, "text")])
def test_flat_formats_from_csv(tmp_path, record, expected):
    data = prepared(write_source(tmp_path, "csv", numbered(record)))
    assert data.format == expected and len(data.train_rows) == 18


def test_records_keep_their_line_in_json_arrays_and_csv(tmp_path):
    rows = numbered(TEXT, 3)
    rows[2]["text"] = ""
    json_path = write_source(tmp_path, "json", rows)
    # indent=2: "[" on line 1, each 3-line object starts on lines 2, 5, 8
    assert f"{json_path}:8: column 'text' is empty" in error_text(json_path, validation_split=0)
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('text\n"two\nlines"\nok\n""\n')
    assert f"{csv_path}:5: column 'text' is empty" in error_text(csv_path, validation_split=0)


def test_column_mapping(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": f"a{i}"} for i in range(10)])
    data = prepared(path, columns={"prompt": "question", "completion": "answer"})
    assert data.format == "prompt_completion"
    assert data.train_rows[0]["prompt"][0]["content"] == "q"


def test_column_mapping_to_a_column_that_is_not_there(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}] * 10)
    text = error_text(path, format="prompt_completion", columns={"prompt": "question", "completion": "answers"})
    assert f"{path}:1: data.columns maps completion to 'answers', but the record has no column 'answers'" in text
    assert "closest: 'answer'" in text and "fix: set data.columns.completion=answer" in text


def test_column_mapping_written_the_wrong_way_round():
    with pytest.raises(UserError) as caught:
        prepared("unused.jsonl", columns={"question": "prompt"})
    assert caught.value.render() == ("data.columns.question: 'question' is not a column peftstudio reads (the keys are "
                                     "the format's names, the values your columns)\n    fix: write data.columns={prompt: question}")


def test_validation_path(tmp_path):
    train = write_lines(tmp_path / "t.jsonl", numbered(TEXT, 10))
    held_out = write_lines(tmp_path / "v.jsonl", numbered(TEXT, 3))
    data = prepared(train, validation_path=str(held_out))
    assert len(data.train_rows) == 10 and len(data.validation_rows) == 3
    assert "validation_path" in data.split_reason and data.sha256 != prepared(train).sha256


def test_max_samples_and_deterministic_shuffle(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(50)])
    assert prepared(path).train_rows == prepared(path).train_rows
    assert prepared(path).train_rows != prepared(path, shuffle_seed=1).train_rows
    capped = prepared(path, max_samples=20, validation_split=0.1)
    assert len(capped.train_rows) == 18 and len(capped.validation_rows) == 2


# ---- data problems: location, value, fix -------------------------------------------------

def test_invalid_json_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [TEXT, '{"text": "unclosed', TEXT])
    text = error_text(path)
    assert f"{path}:2: invalid JSON: Unterminated string starting at (column 10): {{\"text\": \"unclosed" in text
    assert "fix: each line must be one complete JSON object" in text


def test_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [TEXT, "[1, 2]"])
    assert f"{path}:2: expected a JSON object, got list" in error_text(path)


def test_missing_column_names_the_closest(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"instruction": "a", "outputs": "b"}] * 3)
    text = error_text(path, format="instruction")
    assert f"{path}:1: missing column 'output' (found ['instruction', 'outputs']; closest: 'outputs')" in text
    assert "fix: rename it with data.columns={output: outputs}" in text


def test_undetectable_format_names_the_nearest_one(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"instruction": "a", "outputs": "b"}] * 3)
    text = error_text(path)
    assert f"{path}:1: cannot tell the format from columns ['instruction', 'outputs'] (nearest format instruction, " \
           "missing 'output'; closest: 'outputs' for 'output')" in text
    assert "data.columns={output: outputs}" in text


def test_empty_text_and_wrong_type(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": "  "}, {"text": 5}])
    text = error_text(path)
    assert f"{path}:2: column 'text' is empty\n    fix: remove the record or fill it in" in text
    assert f"{path}:3: column 'text' must be text, got int 5" in text


def test_chat_problems(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": "a"}]},
        {"messages": [{"role": "bot", "content": "a"}]},
        {"messages": "hi"},
    ])
    text = error_text(path, format="chat")
    assert f"{path}:1: no assistant turn with content: nothing to learn" in text
    assert f"{path}:2: turn 0 has role 'bot'" in text and "use one of system, user, assistant" in text
    assert f"{path}:3: the conversation must be a non-empty list, got 'hi'" in text


def test_non_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    text = error_text(path)
    assert f"{path}:2: not UTF-8 (byte 0xe9 at column 14)" in text and "fix: re-save the file as UTF-8" in text


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "d.jsonl"
    empty.write_text("\n")
    assert f"{empty}: the file is empty" in error_text(empty)
    assert "data file not found" in error_text(tmp_path / "nope.jsonl")


def test_split_that_leaves_no_validation_rows(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", numbered(TEXT, 3))
    text = error_text(path, validation_split=0.1)
    assert f"{path}: data.validation_split=0.1 of 3 rows leaves no validation rows" in text
    assert "data.validation_split=0 (no evaluation)" in text
    assert len(prepared(path, validation_split=0.0).train_rows) == 3


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    assert "not one written by datasets' save_to_disk" in error_text(tmp_path)


def test_saved_dataset_dict_needs_a_known_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(numbered(TEXT))}).save_to_disk(str(tmp_path / "dd"))
    assert len(prepared(tmp_path / "dd").train_rows) == 18
    assert "has splits ['train'], not 'test'" in error_text(tmp_path / "dd", split="test")


def test_hub_id_goes_through_datasets_load_dataset(tmp_path, monkeypatch):
    """Offline, a hub id reaches datasets.load_dataset and its failure is a readable user error."""
    monkeypatch.chdir(tmp_path)
    text = error_text("some-org/some-dataset")
    assert "data.path: cannot load hub dataset 'some-org/some-dataset'" in text


def test_hub_dataset_rows_keep_split_subset_and_revision(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(numbered(PROMPT_COMPLETION))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = prepared("org/qa", split="test", subset="small", revision="v1")
    assert calls == [("org/qa", "small", "test", "v1")]
    assert data.format == "prompt_completion" and data.train_where[0].startswith("org/qa: row ")
