"""Assistant-only loss, end-of-turn tokens, BOS and padding on real tokenizers and the model
families' own chat templates (../shared/real_tokenizers, TRL's chat_templates/, and the
templates in tests/unit/data/templates). For every family: the trained spans of every
conversation are exactly the assistant messages' texts, each followed by the family's
end-of-turn token, and nothing else."""

import copy
import json
from pathlib import Path

import pytest

from peftstudio.config.validate import load_config
from peftstudio.data.prepare import prepare_data
from peftstudio.data.templates import chat_format, foreign_tokens, known_templates, render, stop_token_ids
from peftstudio.data.tokenization import IGNORE, Masking, tokenize_data, tokenize_row
from peftstudio.data.tokenizer import TokenizerSetup, choose_pad_token, prepare_tokenizer
from peftstudio.errors import UserError

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_tokenizers"
TEMPLATES = Path(__file__).parent / "data" / "templates"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"the real tokenizers are not beside the repo ({REAL})")

# (family, tokenizer folder, template: None = the tokenizer's own, a TRL name, or a file here, end-of-turn token)
FAMILIES = [
    ("llama3_2", "llama3_2", None, "<|eot_id|>"),
    ("llama3", "llama3_2", "llama3", "<|eot_id|>"),
    ("llama3_1", "llama3_2", "llama3_1", "<|eot_id|>"),
    ("qwen2_5", "qwen2_5", None, "<|im_end|>"),
    ("qwen3", "qwen2_5", "qwen3", "<|im_end|>"),
    ("qwen3_instruct_2507", "qwen2_5", "qwen3_instruct_2507", "<|im_end|>"),
    ("gemma3", "gemma3", None, "<end_of_turn>"),
    ("gemma2", "gemma3", "gemma", "<end_of_turn>"),
    ("phi3", "qwen2_5", "phi3", "<|end|>"),
    ("phi3_5", "qwen2_5", "phi3_5", "<|end|>"),
    ("deepseek_r1_distill", "llama3_2", "deepseek_r1_distill", "<｜end▁of▁sentence｜>"),
    ("mistral_v0_1", "llama3_2", "mistral_v0_1.jinja", "<|eot_id|>"),
    ("mistral_v0_3", "llama3_2", "mistral_v0_3.jinja", "<|eot_id|>"),
    ("tinyllama", "llama3_2", "tinyllama_zephyr.jinja", "<|eot_id|>"),
]
# Templates without a system role get it folded into the first user turn (data.system_message=merge).
NO_SYSTEM_ROLE = {"gemma2", "mistral_v0_1"}


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (REAL / "data" / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return {folder: AutoTokenizer.from_pretrained(REAL / folder) for folder in ("llama3_2", "qwen2_5", "gemma3")}


SETUPS: dict[tuple, TokenizerSetup] = {}


def family_setup(tokenizers, folder: str, template: str | None) -> TokenizerSetup:
    """The family's tokenizer with its template (built once per module); where the real
    vocabulary is another family's, the template's control tokens are added as special tokens,
    as the family's own vocabulary has them. Gemma's tokenizer (7 s to load, 6 s to deep-copy)
    is shared: its pad is set and nothing is added to it."""
    from transformers import AutoTokenizer

    if (folder, template) in SETUPS:
        return SETUPS[folder, template]
    tokenizer = copy.copy(tokenizers[folder]) if folder == "gemma3" else AutoTokenizer.from_pretrained(REAL / folder)
    if template is not None:
        path = TEMPLATES / template
        tokenizer.chat_template = path.read_text() if path.is_file() else known_templates()[template]
        foreign = list(foreign_tokens(tokenizer, tokenizer.chat_template))
        if foreign:
            assert folder != "gemma3", "the shared Gemma tokenizer must not change"
            tokenizer.add_special_tokens({"extra_special_tokens": foreign}, replace_extra_special_tokens=False)
    pad_reason = choose_pad_token(tokenizer)
    SETUPS[folder, template] = TokenizerSetup(tokenizer, "", pad_reason, chat_format(tokenizer))
    return SETUPS[folder, template]


def trained_runs(tokenizer, row) -> list[str]:
    runs, current = [], []
    for token, label in zip(row.input_ids, row.labels):
        if label != IGNORE:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def assert_bos_once(tokenizer, ids: list[int]) -> None:
    if tokenizer.bos_token_id is not None:
        assert ids.count(tokenizer.bos_token_id) <= 1, ids[:4]


@pytest.mark.parametrize("family, folder, template, end", FAMILIES, ids=[f[0] for f in FAMILIES])
@pytest.mark.parametrize("data", ["chat.jsonl", "chat_nosys.jsonl"])
def test_every_assistant_turn_and_its_end_of_turn_token_is_trained_and_nothing_else(tokenizers, family, folder,
                                                                                    template, end, data):
    setup = family_setup(tokenizers, folder, template)
    assert setup.chat.end_of_turn == end, setup.chat.reason
    masking = Masking(system_message="merge" if family in NO_SYSTEM_ROLE else "keep")
    for record in records(data):
        row = tokenize_row(setup, record, masking)
        answers = [m["content"].strip() + end for m in record["messages"] if m["role"] == "assistant"]
        assert [run.strip() for run in trained_runs(setup.tokenizer, row)] == answers, setup.chat.reason
        assert_bos_once(setup.tokenizer, row.input_ids)
        last = tokenize_row(setup, record, Masking(train_on_turns="last", system_message=masking.system_message))
        assert [run.strip() for run in trained_runs(setup.tokenizer, last)] == answers[-1:]


@pytest.mark.parametrize("family, folder, template, end", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_instruction_data_trains_the_output_and_the_end_of_turn_token(tokenizers, family, folder, template, end):
    setup = family_setup(tokenizers, folder, template)
    for record in records("alpaca.jsonl")[:4]:
        prompt = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
        row = tokenize_row(setup, {"prompt": [{"role": "user", "content": prompt}],
                                   "completion": [{"role": "assistant", "content": record["output"]}]})
        assert [run.strip() for run in trained_runs(setup.tokenizer, row)] == [record["output"].strip() + end]
        assert_bos_once(setup.tokenizer, row.input_ids)


@pytest.mark.parametrize("folder", ["llama3_2", "gemma3"])
def test_text_with_a_pre_rendered_chat_gets_one_bos(tokenizers, folder):
    setup = family_setup(tokenizers, folder, None)
    text = render(setup.tokenizer, records("chat.jsonl")[0]["messages"])
    assert text.startswith(setup.tokenizer.bos_token)
    row = tokenize_row(setup, {"text": text})
    assert row.input_ids.count(setup.tokenizer.bos_token_id) == 1 and row.input_ids[0] == setup.tokenizer.bos_token_id


def test_qwen3_keeps_the_empty_think_block_out_of_the_loss(tokenizers):
    setup = family_setup(tokenizers, "qwen2_5", "qwen3")
    record = records("chat.jsonl")[0]
    row = tokenize_row(setup, record)
    text = setup.tokenizer.decode(row.input_ids)
    assert "<think>\n\n</think>" in text  # the original template renders it in the last turn ...
    assert not any("think>" in run for run in trained_runs(setup.tokenizer, row))  # ... as prompt, never as an answer
    assert setup.chat.masking == "located" and "located" in setup.chat.reason  # TRL's variant renders other tokens


def test_trl_training_variant_is_used_where_it_renders_the_same_tokens(tokenizers):
    assert "TRL's training variant of the 'qwen2_5' template" in family_setup(tokenizers, "qwen2_5", None).chat.reason
    assert "TRL's training variant of the 'gemma3' template" in family_setup(tokenizers, "gemma3", None).chat.reason
    assert family_setup(tokenizers, "llama3_2", None).chat.masking == "located"  # TRL has no llama3_2 variant


def config_for(*overrides: str):
    return load_config([f"model.name_or_path={REAL / 'llama3_2'}", f"data.path={REAL / 'data' / 'chat.jsonl'}",
                        *overrides])[0]


def test_a_template_the_vocabulary_lacks_is_refused_naming_the_tokens_and_those_that_fit():
    with pytest.raises(UserError) as caught:
        prepare_tokenizer(config_for("data.chat_template=chatml"), "chat")
    text = caught.value.render()
    assert "'chatml' writes control tokens this tokenizer does not have as single tokens: '<|im_start|>'" in text
    assert "remove data.chat_template to use the model's own template" in text
    fitting = text.split("fits this tokenizer (")[1].split(")")[0].split(", ")
    assert "llama3_2" in fitting and "chatml" not in fitting and "qwen2_5" not in fitting and "gemma3" not in fitting
    assert "data.add_special_tokens=true" in text


def test_add_special_tokens_opts_in_and_the_end_of_turn_is_the_added_token():
    setup = prepare_tokenizer(config_for("data.chat_template=chatml", "data.add_special_tokens=true"), "chat")
    assert setup.added_tokens == ["<|im_start|>", "<|im_end|>"]
    row = tokenize_row(setup, records("chat_nosys.jsonl")[0])
    assert all(run.endswith("<|im_end|>") for run in trained_runs(setup.tokenizer, row))


def test_a_template_without_a_system_role_is_a_data_error_with_file_line_and_the_fix(tokenizers):
    setup = family_setup(tokenizers, "gemma3", "gemma")
    data = prepare_data(config_for(f"data.path={REAL / 'data' / 'chat.jsonl'}", "data.validation_split=0").data)
    with pytest.raises(UserError) as caught:
        tokenize_data(data, setup, 512, "truncate", Masking(), 4)
    text = caught.value.render()
    assert "conversation(s) cannot be tokenized with the chat template" in text
    assert "chat.jsonl:1: the chat template refuses this conversation: 'System role not supported'" in text
    assert "fix: set data.system_message=merge" in text
    assert tokenize_data(data, setup, 512, "truncate", Masking(system_message="drop"), 4).train


def test_an_alternation_error_names_the_turn(tokenizers):
    from peftstudio.data.turns import TurnProblem

    setup = family_setup(tokenizers, "llama3_2", "mistral_v0_1.jinja")
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}]
    with pytest.raises(TurnProblem) as caught:
        tokenize_row(setup, {"messages": messages})
    assert "(turn 1 is 'user' after 'user')" in caught.value.message and "alternate" in caught.value.fix


def test_padding_uses_the_vocabulary_never_a_new_token(tokenizers):
    from transformers import AutoTokenizer

    llama = AutoTokenizer.from_pretrained(REAL / "llama3_2")
    size = len(llama)
    assert "'<|finetune_right_pad_id|>' (id 128004), already in the vocabulary" in choose_pad_token(llama)
    assert len(llama) == size
    assert choose_pad_token(tokenizers["qwen2_5"]).startswith("pad token '<|endoftext|>' (id 151643) is distinct from EOS")


def test_generation_stops_on_the_models_own_stop_tokens(tokenizers):
    gemma = tokenizers["gemma3"]
    stops = stop_token_ids(gemma, 1)
    assert gemma.convert_tokens_to_ids("<end_of_turn>") in stops and gemma.eos_token_id in stops
    llama = tokenizers["llama3_2"]
    assert stop_token_ids(llama, [128001, 128008, 128009]) == [128001, 128008, 128009]
