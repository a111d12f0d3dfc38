"""What the model will be trained on, shown: samples tokenized exactly as training tokenizes
them (data/tokenization.py), cut where the labels switch between the part the loss ignores and
the part the model learns, and where max_seq_length truncates. `peftstudio preview-data` and
the studio's dataset preview both call `sample_previews`."""

from __future__ import annotations

from typing import Any

from peftstudio.config.schema import RunConfig
from peftstudio.data.prepare import PreparedData
from peftstudio.data.tokenization import IGNORE, Masking, tokenize_row
from peftstudio.data.tokenizer import TokenizerSetup
from peftstudio.data.turns import TurnProblem
from peftstudio.errors import Problem, UserError


def sample_previews(config: RunConfig, data: PreparedData, setup: TokenizerSetup, count: int) -> list[dict[str, Any]]:
    """Per sample: where it came from, its token ids, the decoded text, the decoded trained
    spans, and the runs of (trained, truncated) text in order."""
    tokenizer, masking = setup.tokenizer, Masking.of(config)
    max_length = config.training.max_seq_length
    previews = []
    for row, where in list(zip(data.train_rows, data.train_where or [""] * len(data.train_rows)))[:count]:
        try:
            tokenized = tokenize_row(setup, row, masking)
        except TurnProblem as problem:
            raise UserError(Problem(where or data.source, problem.message, problem.fix)) from None
        runs = label_runs(tokenizer, tokenized.input_ids, tokenized.labels, max_length)
        previews.append({"where": where, "input_ids": tokenized.input_ids,
                         "text": tokenizer.decode(tokenized.input_ids),
                         "trained_spans": [run["text"] for run in runs if run["trained"]], "runs": runs})
    return previews


def label_runs(tokenizer, ids: list[int], labels: list[int], max_length: int) -> list[dict[str, Any]]:
    """Consecutive tokens with the same (trained, truncated) state, decoded together."""
    pieces: list[dict[str, Any]] = []
    for index, (token, label) in enumerate(zip(ids, labels)):
        state = {"trained": label != IGNORE and index < max_length, "truncated": index >= max_length}
        if pieces and all(pieces[-1][k] == v for k, v in state.items()):
            pieces[-1]["ids"].append(token)
        else:
            pieces.append({**state, "ids": [token]})
    return [{"text": tokenizer.decode(piece.pop("ids")), **piece} for piece in pieces]
