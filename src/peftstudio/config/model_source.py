"""Whether a local directory given as `model.name_or_path` holds a model: checked when the run
is planned, before anything tries to load it (a tokenizer loader's own error names neither the
directory nor what is missing)."""

from __future__ import annotations

from pathlib import Path

from peftstudio.errors import Problem

# Any of these makes a directory's tokenizer loadable (fast tokenizers, sentencepiece, BPE and
# WordPiece vocabularies, Mistral's tekken); tokenizer_config.json alone does not.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt", "tekken.json")
FIX = ("point model.name_or_path at a directory written by save_pretrained (model and tokenizer), "
       "or at a hub id such as Qwen/Qwen2.5-0.5B")


def missing_model_files(directory: Path) -> list[str]:
    """What a model directory lacks: config.json, tokenizer files (empty: it is a model)."""
    missing = [] if (directory / "config.json").is_file() else ["config.json"]
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files")
    return missing


def local_model_problem(name_or_path: str) -> Problem | None:
    """A problem when `name_or_path` is an existing local directory without a config.json (not
    a model); None for a model directory, for anything that is not a local directory (a hub id),
    and for a directory with only a config.json, which plans with estimated token figures (train
    needs its tokenizer: plan.pipeline.require_tokenizer_files)."""
    directory = Path(name_or_path).expanduser()
    if not directory.is_dir():
        return None
    missing = missing_model_files(directory)
    if "config.json" not in missing:
        return None
    return Problem("model.name_or_path", f"no {' / '.join(missing)} in {directory}: not a model directory", FIX)
