"""Chat templates, pad token, label masks, over-long samples and the token figures `plan`
reports — all decided before training, with the tokenizer alone (no weights)."""

import copy
import json

import pytest

from peftstudio.data.prepare import prepare_data
from peftstudio.data.templates import GENERATION_MARKER, chat_format, known_templates
from peftstudio.data.tokenization import IGNORE, Masking, padding_waste, percentiles, tokenize_data, tokenize_row
from peftstudio.data.tokenizer import TokenizerSetup, apply_chat_template_choice, choose_pad_token
from peftstudio.config.schema import DataSettings
from peftstudio.errors import UserError
from peftstudio.plan.pipeline import make_plan
from tests.conftest import CPU

PAIR = {"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
        "completion": [{"role": "assistant", "content": "5"}]}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                     {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"}]}


@pytest.fixture(scope="module")
def base_tokenizer(model_cache):
    from transformers import AutoTokenizer

    from peftstudio.data.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir(model_cache))


@pytest.fixture
def tokenizer(base_tokenizer):
    return copy.deepcopy(base_tokenizer)


def setup_of(tokenizer, data_format="instruction", chat_template=None) -> TokenizerSetup:
    reason = apply_chat_template_choice(tokenizer, chat_template, data_format)
    pad_reason = choose_pad_token(tokenizer)
    return TokenizerSetup(tokenizer, reason, pad_reason, chat_format(tokenizer))


def learned_text(tokenizer, row) -> str:
    return tokenizer.decode([label for label in row.labels if label != IGNORE])


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


def test_completion_only_labels_cover_the_answer_and_its_end(tokenizer):
    setup = setup_of(tokenizer)
    row = tokenize_row(setup, PAIR)
    assert learned_text(tokenizer, row) == "5<|end_of_turn|>"
    everything = tokenize_row(setup, PAIR, Masking("all"))
    assert everything.labels == everything.input_ids == row.input_ids


def test_assistant_only_labels_in_multi_turn_chat(tokenizer):
    setup = setup_of(tokenizer, "chat")
    row = tokenize_row(setup, CHAT)
    assert learned_text(tokenizer, row) == "hello<|end_of_turn|>see you<|end_of_turn|>"
    last = tokenize_row(setup, CHAT, Masking(train_on_turns="last"))
    assert learned_text(tokenizer, last) == "see you<|end_of_turn|>" and last.input_ids == row.input_ids


def test_text_rows_learn_every_token_and_end_with_eos(tokenizer):
    row = tokenize_row(setup_of(tokenizer, "text"), {"text": "plain words"})
    assert row.labels == row.input_ids and row.input_ids[-1] == tokenizer.eos_token_id


def test_conversational_data_without_a_template_is_refused(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(UserError) as caught:
        apply_chat_template_choice(tokenizer, None, "instruction")
    text = caught.value.render()
    assert text.startswith("data.chat_template: instruction data needs a chat template, and this tokenizer has none")
    assert "fix: no known template fits this tokenizer's control tokens" in text
    assert "data.chat_template=chatml with data.add_special_tokens=true" in text
    assert "none needed" in apply_chat_template_choice(tokenizer, None, "text")


def test_prompt_completion_without_a_template_is_plain_text(tokenizer):
    tokenizer.chat_template = None
    setup = setup_of(tokenizer, "prompt_completion")
    assert setup.template_reason == "the tokenizer has none: prompt and completion are joined as plain text"
    row = tokenize_row(setup, PAIR)
    assert tokenizer.decode(row.input_ids) == "<|begin_of_text|>What is 2 + 3?5<|end_of_turn|>"
    assert learned_text(tokenizer, row) == "5<|end_of_turn|>"


def test_chat_template_by_name_inline_or_file(tokenizer, tmp_path):
    tokenizer.chat_template = None
    assert "chatml" in known_templates() and "llama3" in known_templates()
    setup = setup_of(tokenizer, "chat", "chatml")
    assert setup.has_generation_markers and setup.template_reason == "data.chat_template: the known template 'chatml'"
    row = tokenize_row(setup, CHAT)
    assert learned_text(tokenizer, row) == "hello<|im_end|>see you<|im_end|>"
    inline = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert apply_chat_template_choice(tokenizer, inline, "chat") == "data.chat_template: an inline Jinja template"
    (tmp_path / "t.jinja").write_text(inline)
    assert "file" in apply_chat_template_choice(tokenizer, str(tmp_path / "t.jinja"), "chat")
    with pytest.raises(UserError, match="'chatm' is not a known template name.*closest name: 'chatml'"):
        apply_chat_template_choice(tokenizer, "chatm", "chat")


def test_template_without_generation_markers_trains_the_located_answers(tokenizer, tmp_path):
    tokenizer.chat_template = GENERATION_MARKER.sub("", tokenizer.chat_template).replace("{%- endgeneration -%}", "")
    data = prepare_data(DataSettings(path=write_jsonl(tmp_path / "c.jsonl", [CHAT] * 10), validation_split=0))
    setup = setup_of(tokenizer, "chat")
    assert setup.chat.masking == "located" and setup.chat.end_of_turn == "<|end_of_turn|>"
    tokens = tokenize_data(data, setup, 64, "truncate", Masking(), 4)
    assert {learned_text(tokenizer, row) for row in tokens.train} == {"hello<|end_of_turn|>see you<|end_of_turn|>"}
    assert tokenize_data(data, setup, 64, "truncate", Masking("all"), 4).stats.label_tokens > tokens.stats.label_tokens


def test_truncation_that_cuts_every_answer_is_refused(tokenizer, tmp_path):
    long_prompt = {"instruction": "word " * 40, "output": "yes"}
    data = prepare_data(DataSettings(path=write_jsonl(tmp_path / "d.jsonl", [long_prompt] * 8), validation_split=0))
    with pytest.raises(UserError, match="training.max_seq_length=16 cuts every answer off"):
        tokenize_data(data, setup_of(tokenizer), 16, "truncate", Masking(), 4)


def test_overlong_samples_truncate_drop_or_error(tokenizer, tmp_path):
    records = [{"text": "short"}] * 6 + [{"text": "many words " * 30}] * 2
    data = prepare_data(DataSettings(path=write_jsonl(tmp_path / "d.jsonl", records), validation_split=0, shuffle_seed=3))
    setup = setup_of(tokenizer, "text")
    truncated = tokenize_data(data, setup, 16, "truncate", Masking(), 4)
    assert truncated.stats.over_limit == 2 and len(truncated.train) == 8
    assert max(len(r.input_ids) for r in truncated.train) == 16 and truncated.stats.percentiles["max"] > 16
    dropped = tokenize_data(data, setup, 16, "drop", Masking(), 4)
    assert dropped.stats.over_limit == 2 and len(dropped.train) == 6
    with pytest.raises(UserError) as caught:
        tokenize_data(data, setup, 16, "error", Masking(), 4)
    text = caught.value.render()
    assert text.startswith("2 of 8 samples are longer than training.max_seq_length=16 (data.overlong=error):")
    long_lines = [data.train_where[i] for i, row in enumerate(data.train_rows) if len(row["text"]) > 20]
    assert f"{long_lines[0]}: 152 tokens, over training.max_seq_length=16" in text
    assert "data.overlong=truncate (keep the start) or data.overlong=drop" in text


def test_padding_never_grows_the_vocabulary():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="</s>")
    reason = choose_pad_token(plain)
    assert plain.pad_token_id == 1 and len(plain) == 4
    assert reason.startswith("pad token = EOS '</s>': padding with EOS '</s>'; padding is masked out of labels")
    with_unk = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    assert choose_pad_token(with_unk).startswith("the tokenizer has no pad token: padding with unk")
    assert with_unk.pad_token_id == 2
    reserved = Tokenizer(models.WordLevel({**vocab, "<|reserved_special_token_3|>": 4, "<|reserved_special_token_0|>": 5},
                                          unk_token="<unk>"))
    spare = PreTrainedTokenizerFast(tokenizer_object=reserved, eos_token="</s>")
    assert "padding with '<|reserved_special_token_3|>' (id 4), already in the vocabulary" in choose_pad_token(spare)
    assert len(spare) == 6


def test_added_tokens_grow_the_embeddings_only_when_needed():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftstudio.model.load import match_vocabulary

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))

    class Vocab:
        def __init__(self, size):
            self.size = size

        def __len__(self):
            return self.size

    match_vocabulary(model, Vocab(3))
    assert model.get_input_embeddings().weight.shape[0] == 4
    match_vocabulary(model, Vocab(5))
    assert model.get_input_embeddings().weight.shape[0] == 5


def test_percentiles_and_padding_waste():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert padding_waste([10, 10, 10, 10], 2) == 0.0
    assert padding_waste([10, 30], 2) == pytest.approx(1 - 40 / 60)


def test_plan_reports_measured_token_figures(model_cache):
    plan = make_plan([], hardware=CPU)
    data = plan.data
    assert data.tokens_measured and data.token_lengths["p50"] <= data.token_lengths["p90"] <= data.token_lengths["max"]
    assert 0 < data.padding_waste < 1 and data.over_limit == 0
    assert data.chat_template == "the tokenizer's own chat template" and "distinct from EOS" in data.pad_token
    short = make_plan(["training.max_seq_length=28", "data.overlong=drop"], hardware=CPU)
    assert short.data.over_limit > 0 and short.data.train_rows <= data.train_rows
