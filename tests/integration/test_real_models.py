"""Chat SFT through the CLI on shrunk random-weight models with real tokenizers and their own
chat templates (../shared/real_tokenizers): the plan says what is trained, preview-data shows
it, three steps train, the adapter holds LoRA weights only (no embedding copy for padding), and
generate runs with the model's stop tokens. Also the opt-in that grows the vocabulary."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_tokenizers"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"the real tokenizers are not beside the repo ({REAL})")
END_OF_TURN = {"llama3_2": "<|eot_id|>", "qwen2_5": "<|im_end|>"}


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    """family → a 2-layer random model dir with the family's real tokenizer and template."""
    root = tmp_path_factory.mktemp("shrunk")
    models = {}
    for family in END_OF_TURN:
        subprocess.run([sys.executable, str(REAL / "make_shrunk_model.py"), family, str(root / family)], check=True,
                       capture_output=True)
        models[family] = root / family
    return models


def lora_bytes(adapter: Path) -> tuple[int, list[str]]:
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as weights:
        keys = list(weights.keys())
        return sum(weights.get_slice(k).get_shape()[0] * weights.get_slice(k).get_shape()[1] * 4 for k in keys), keys


@pytest.mark.parametrize("family", list(END_OF_TURN))
def test_chat_sft_on_a_real_tokenizer_trains_answers_and_saves_lora_only(shrunk, family, tmp_path):
    """The second family trains only (preview and generation stops are covered per family,
    Gemma-3's 262k-token tokenizer included, in tests/unit/test_chat_templates.py)."""
    run = [f"model.name_or_path={shrunk[family]}", f"data.path={REAL / 'data' / 'chat.jsonl'}",
           "training.max_seq_length=256"]
    if family == "llama3_2":
        check_preview(run, END_OF_TURN[family], tmp_path)
    trained = run_cli("train", *run, "training.num_batches=3", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "loss on every assistant turn and its end-of-turn token, nothing else" in trained.stdout
    size, keys = lora_bytes(tmp_path / "outputs/adapter")
    assert all("lora_" in key for key in keys), [k for k in keys if "lora_" not in k]
    assert (tmp_path / "outputs/adapter/adapter_model.safetensors").stat().st_size < size + 64 * 1024
    if family == "llama3_2":
        generated = run_cli("generate", "outputs", "-p", "Hello", "--max-new-tokens", "6", cwd=tmp_path)
        assert generated.returncode == 0, generated.stderr


def check_preview(run: list[str], end: str, tmp_path: Path) -> None:
    preview = run_cli("preview-data", *run, "--rows", "2", "--json", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    shown = json.loads(preview.stdout)
    assert shown["end_of_turn"] == end
    for sample in shown["samples"]:
        line = int(sample["where"].rsplit(":", 1)[1])
        record = json.loads((REAL / "data" / "chat.jsonl").read_text().splitlines()[line - 1])
        answers = [m["content"] + end for m in record["messages"] if m["role"] == "assistant"]
        assert [span.strip() for span in sample["trained_spans"]] == answers


def test_a_template_the_vocabulary_lacks_is_refused_before_loading(shrunk, tmp_path):
    result = run_cli("plan", f"model.name_or_path={shrunk['llama3_2']}", f"data.path={REAL / 'data' / 'chat.jsonl'}",
                     "data.chat_template=chatml", cwd=tmp_path)
    assert result.returncode == 2
    assert "'<|im_start|>' (6 pieces)" in result.stderr and "llama3_2" in result.stderr
    assert "Traceback" not in result.stderr


def test_added_control_tokens_train_and_save_the_embeddings_when_asked(model_cache, tmp_path):
    from peftstudio.data.embedded import embedded_model_dir

    source, base = embedded_model_dir(model_cache), tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, base / name)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    run = [f"model.name_or_path={base}", "data.chat_template=chatml", "data.max_samples=40"]
    trained = run_cli("train", *run, "data.add_special_tokens=true", "training.num_batches=2", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "adds 2 token(s) (<|im_start|>, <|im_end|>): the embedding matrix and output head" in trained.stdout
    _, keys = lora_bytes(tmp_path / "outputs/adapter")
    assert any(key.endswith("embed_tokens.weight") for key in keys) and any(key.endswith("lm_head.weight") for key in keys)
    generated = run_cli("generate", "outputs", "--count", "1", "--max-new-tokens", "4", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
