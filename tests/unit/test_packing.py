"""Packed (padding-free) batches: samples concatenated into one row must not attend to each
other. Each sample's loss in a packed batch equals its loss run alone (fp32, 1e-5), with the
attention implementations a CPU run resolves to, through TRL's own padding-free collator.

transformers isolates packed samples only when the forward pass has no KV cache
(masking_utils skips find_packed_sequence_indices when past_key_values is set). Training runs
without one (SFTTrainer.compute_loss passes use_cache=False, and sft_config sets
use_cache=False), so the tests do the same."""

import pytest
import torch

from peftstudio.data.prepare import prepare_data
from peftstudio.data.templates import chat_format
from peftstudio.data.tokenization import IGNORE, tokenize_row
from peftstudio.data.tokenizer import TokenizerSetup
from peftstudio.config.schema import DataSettings


@pytest.fixture(scope="module")
def rows_and_tokenizer(model_cache):
    from transformers import AutoTokenizer

    from peftstudio.data.embedded import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir(model_cache))
    data = prepare_data(DataSettings())
    setup = TokenizerSetup(tokenizer, "", "", chat_format(tokenizer))
    rows = [tokenize_row(setup, row) for row in data.train_rows[:6]]
    assert len({len(row.input_ids) for row in rows}) > 2, "samples of different lengths make the test meaningful"
    return rows, tokenizer


def load_model(model_cache, attention: str):
    from transformers import AutoModelForCausalLM

    from peftstudio.data.embedded import embedded_model_dir

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir(model_cache), dtype=torch.float32,
                                                 attn_implementation=attention)
    return model.eval()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of next-token prediction (0 where the label is ignored)."""
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=IGNORE,
                                             reduction="none")


def per_sample_losses(model, batch: dict, lengths: list[int]) -> list[float]:
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        losses = token_losses(model(**inputs, use_cache=False).logits, batch["labels"])
    labels = batch["labels"][0, 1:]
    result, start = [], 0
    for length in lengths:
        # position t predicts label t+1: a sample's targets are its own labels 1..length-1
        segment = slice(start, start + length - 1)
        counted = labels[segment] != IGNORE
        result.append(float(losses[segment][counted].mean()))
        start += length
    return result


def alone_losses(model, rows) -> list[float]:
    result = []
    for row in rows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row.input_ids])).logits
        losses = token_losses(logits, torch.tensor([row.labels]))
        result.append(float(losses[torch.tensor(row.labels[1:]) != IGNORE].mean()))
    return result


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_gives_each_sample_its_own_loss(model_cache, rows_and_tokenizer, attention):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows, tokenizer = rows_and_tokenizer
    model = load_model(model_cache, attention)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    packed = collator([{"input_ids": r.input_ids, "labels": r.labels} for r in rows])
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    lengths = [len(r.input_ids) for r in rows]
    packed_losses = per_sample_losses(model, packed, lengths)
    assert packed_losses == pytest.approx(alone_losses(model, rows), abs=1e-5, rel=0)

    # Control: the same row without position_ids is one long sequence whose later samples see
    # the earlier ones; their losses move, so the check above can fail.
    leaky = per_sample_losses(model, {"input_ids": packed["input_ids"], "labels": packed["labels"]}, lengths)
    assert max(abs(a - b) for a, b in zip(leaky[1:], packed_losses[1:])) > 1e-3


def test_packed_and_padded_batches_have_the_same_mean_loss(model_cache, rows_and_tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows, tokenizer = rows_and_tokenizer
    model = load_model(model_cache, "sdpa")
    examples = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    losses = []
    for padding_free in (True, False):
        batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)(examples)
        with torch.no_grad():
            losses.append(float(model(**batch, use_cache=False).loss))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5, rel=0)


def test_auto_packing_follows_the_measured_padding_waste_with_sdpa():
    from peftstudio.config.validate import load_config
    from peftstudio.plan.resolve import PACKING_WASTE_THRESHOLD, resolve
    from tests.conftest import CPU

    config, _ = load_config([])
    wasteful = resolve(config, CPU, PACKING_WASTE_THRESHOLD + 0.1)
    assert wasteful.config.training.attention == "sdpa" and wasteful.config.training.packing == "on"
    assert wasteful.reasons["training.packing"] == (
        "35.0% of tokens would be padding at micro-batch 8 (above 25%): samples are packed padding-free, kept apart "
        "by position_ids with sdpa")
    tight = resolve(config, CPU, 0.1)
    assert tight.config.training.packing == "off" and "(at most 25%: not worth packing)" in tight.reasons["training.packing"]
