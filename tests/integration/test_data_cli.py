"""Data problems through the real CLI: exit 2, one message with file:line, the value and the
fix, no traceback; and a model whose pad token is EOS trains and generates with the fix."""

import json
import shutil

import pytest

from tests.conftest import run_cli


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name,content,expected", [
    ("bad.jsonl", '{"text": "ok"}\n{"text": "no end}\n',
     ":2: invalid JSON: Unterminated string starting at (column 10): {\"text\": \"no end}\n"
     "    fix: each line must be one complete JSON object"),
    ("qa.csv", "instruction,outputs\nSay hi,hi\n",
     ":2: missing column 'output' (found ['instruction', 'outputs']; closest: 'outputs')\n"
     "    fix: rename it with data.columns={output: outputs}"),
    ("latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
     ":2: not UTF-8 (byte 0xe9 at column 14)\n    fix: re-save the file as UTF-8"),
])
def test_data_problems_exit_2_with_location_and_fix(tmp_path, name, content, expected):
    path = write(tmp_path / name, content)
    extra = ["data.format=instruction"] if name.endswith(".csv") else []
    result = run_cli("plan", f"data.path={path}", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{path}{expected}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def padless_model(model_cache, target, template: bool):
    """A small model whose tokenizer has no pad token of its own (pad = EOS), no unk and no
    reserved token, and whose embedding matrix has exactly one row per token: padding must use
    EOS (masked), never a new token, at train, generate and merge time alike."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from peftstudio.data.embedded import embedded_model_dir

    source = embedded_model_dir(model_cache)
    target.mkdir()
    shutil.copy(source / "tokenizer_config.json", target / "tokenizer_config.json")
    if template:
        shutil.copy(source / "chat_template.jinja", target / "chat_template.jinja")
    text = (source / "tokenizer.json").read_text().replace("<|pad|>", "<|reserved|>")
    (target / "tokenizer.json").write_text(text)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config["pad_token"] = config["eos_token"]
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    vocabulary = len(AutoTokenizer.from_pretrained(target))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocabulary, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=2, bos_token_id=1, pad_token_id=2))
    model.save_pretrained(target)
    return target, vocabulary


def test_instruction_data_on_a_tokenizer_without_template_is_refused(tmp_path, model_cache):
    model, _ = padless_model(model_cache, tmp_path / "base", template=False)
    result = run_cli("plan", f"model.name_or_path={model}", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.chat_template: instruction data needs a chat template, and this tokenizer has none" in result.stderr
    assert "no known template fits this tokenizer's control tokens" in result.stderr


def test_pad_equal_to_eos_is_fixed_and_the_run_trains_generates_and_merges(tmp_path, model_cache):
    model, vocabulary = padless_model(model_cache, tmp_path / "base", template=True)
    args = [f"model.name_or_path={model}", "training.num_batches=3", "training.packing=on", "data.max_samples=40",
            "training.save_interval_steps=3", "training.log_interval_steps=1"]
    trained = run_cli("train", *args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    # train prints the plan summary first: the choice is announced before any weight is loaded
    assert "pad       pad token = EOS '<|end_of_turn|>': padding with EOS '<|end_of_turn|>'; padding is masked out " \
           "of labels and attention" in trained.stdout, trained.stdout
    saved = json.loads((tmp_path / "outputs/adapter/tokenizer_config.json").read_text())
    assert saved["pad_token"] == "<|end_of_turn|>"
    from safetensors import safe_open

    with safe_open(tmp_path / "outputs/adapter/adapter_model.safetensors", "pt") as adapter:
        assert all("lora_" in key for key in adapter.keys()), "the adapter holds only LoRA weights"
    generated = run_cli("generate", "outputs", "--count", "1", "--max-new-tokens", "4", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    merged = run_cli("merge", "outputs", "--out", "merged", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert json.loads((tmp_path / "merged/config.json").read_text())["vocab_size"] == vocabulary
