"""Where a model's architecture numbers come from when the config does not carry them: a local
model directory's config.json, the Hugging Face cache's config.json for the hub id and
revision, or peftstudio's catalogue of popular models (known_models.yaml). All offline: files
are read, nothing is fetched, no weights are touched.

When none has the numbers, the error says so plainly and how to give them, because memory,
time and cost cannot be predicted without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from peftstudio.config.schema import ModelArchitecture, ModelSettings
from peftstudio.errors import Problem, UserError

CATALOGUE_FILE = Path(__file__).with_name("known_models.yaml")
# Keys of a catalogue entry that describe it rather than the architecture.
ENTRY_KEYS = ("source", "also", "published", "text_tower_of_image_text_model")


@dataclass(frozen=True)
class KnownModel:
    """One catalogue entry: the hub id, its twins, the numbers and where they are from."""

    hub_id: str
    also: tuple[str, ...]
    architecture: ModelArchitecture
    source: str
    published: str | None  # the size its model card states, e.g. "8.03B"
    text_tower_only: bool  # an image-text model: the numbers are its language model's


@dataclass(frozen=True)
class FoundArchitecture:
    """Architecture numbers and a one-line account of where they were read."""

    architecture: ModelArchitecture
    source: str


@lru_cache(maxsize=1)
def known_models() -> dict[str, KnownModel]:
    """The catalogue, by lower-cased hub id (every id of an entry, twins included)."""
    # libyaml's loader when present: the pure-Python one takes ~60 ms of plan's budget here
    raw = yaml.load(CATALOGUE_FILE.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    by_id: dict[str, KnownModel] = {}
    for hub_id, entry in raw.items():
        if hub_id.startswith("_"):  # YAML anchors shared by several entries
            continue
        numbers = {key: value for key, value in entry.items() if key not in ENTRY_KEYS}
        published = entry.get("published")
        model = KnownModel(hub_id, tuple(entry.get("also", ())), ModelArchitecture(**numbers), entry["source"],
                           str(published) if published is not None else None,
                           bool(entry.get("text_tower_of_image_text_model", False)))
        for name in (hub_id, *model.also):
            by_id[name.lower()] = model
    return by_id


def catalogue_entries() -> list[KnownModel]:
    """Each catalogue entry once, in file order."""
    return list({id(model): model for model in known_models().values()}.values())


def find_architecture(settings: ModelSettings) -> FoundArchitecture:
    """The numbers of `settings.name_or_path` from a local dir, the HF cache or the catalogue;
    a UserError naming every place looked in when none has them."""
    name = settings.name_or_path
    local = Path(name).expanduser()
    if local.is_dir():
        config = local / "config.json"
        if config.is_file():
            return FoundArchitecture(_read(config), f"{config}")
        raise UserError(Problem("model.name_or_path", f"no config.json in {local}, so its architecture is unknown",
                                "point model.name_or_path at a model directory with its config.json, or set "
                                "model.architecture.* (see `peftstudio explain model.architecture`)"))
    cached = cached_config(name, settings.revision)
    if cached is not None:
        return FoundArchitecture(_read(cached), f"the Hugging Face cache ({cached})")
    known = known_models().get(name.lower())
    if known is not None:
        tower = "; the language model of an image-text model, the vision tower not counted" \
            if known.text_tower_only else ""
        entry = "" if known.hub_id.lower() == name.lower() else f", the numbers of {known.hub_id}"
        return FoundArchitecture(known.architecture, f"peftstudio's catalogue ({known.source}{entry}{tower})")
    raise UserError(unknown_architecture(name))


def unknown_architecture(name: str) -> Problem:
    """What a plan says about a model whose numbers are nowhere to be found offline."""
    return Problem("model.architecture",
                   f"the architecture of {name!r} is not known offline: not a local directory, not in the Hugging "
                   "Face cache, not in peftstudio's catalogue",
                   "point model.name_or_path at a local directory with the model's config.json, fetch that file once "
                   f"(`hf download {name} config.json`), or set model.architecture.* (num_layers, hidden_size, "
                   "num_heads, num_kv_heads, intermediate_size, vocab_size, ...)")


def cached_config(repo_id: str, revision: str | None, cache_dir: Path | None = None) -> Path | None:
    """config.json of `repo_id` at `revision` in the Hugging Face cache (`cache_dir`, by default
    huggingface_hub's), without any network call."""
    if repo_id.count("/") != 1:
        return None  # not a hub id
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision or "main")
    except HFValidationError:
        return None
    return Path(found) if isinstance(found, str) else None


def _read(path: Path) -> ModelArchitecture:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(Problem(str(path), f"cannot read it as JSON: {error}",
                                "restore the model's config.json, or set model.architecture.*")) from None
    return architecture_from_hf_config(raw, str(path))


def architecture_from_hf_config(raw: dict, source: str = "config.json") -> ModelArchitecture:
    """Map a transformers config.json onto ModelArchitecture (image-text configs: the text tower)."""
    text = raw.get("text_config") or raw
    model_type = str(text.get("model_type", raw.get("model_type", "llama")))
    try:
        heads = int(_first(text, "num_attention_heads", "n_head"))
        hidden = int(_first(text, "hidden_size", "n_embd"))
        return ModelArchitecture(
            model_type=model_type,
            num_layers=int(_first(text, "num_hidden_layers", "n_layer")),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=_kv_heads(text, model_type, heads),
            head_dim=text.get("head_dim"),
            intermediate_size=int(text.get("ffn_hidden_size") or 4 * hidden) if model_type == "falcon"
            else int(text["intermediate_size"]),
            vocab_size=int(text["vocab_size"]),
            # transformers' own default applies when the file leaves it out: tied for Falcon and Gemma
            tie_embeddings=bool(text.get("tie_word_embeddings", raw.get("tie_word_embeddings",
                                                                        model_type.startswith(("falcon", "gemma"))))),
            attention_bias=bool(text.get("bias", False)) if model_type == "falcon"
            else bool(text.get("attention_bias", model_type == "qwen2")),
            max_position_embeddings=int(text.get("max_position_embeddings", 2048 if model_type == "falcon" else 4096)),
            num_experts=int(text.get("num_local_experts") or 0),
            num_experts_per_token=int(text.get("num_experts_per_tok") or 0) if text.get("num_local_experts") else 0,
            norms_per_block=_falcon_norms(text) if model_type == "falcon" else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(Problem(source, f"not a decoder config peftstudio can plan: missing or bad {error}",
                                "set model.architecture.* explicitly")) from None


def _first(config: dict, *names: str):
    for name in names:
        if name in config:
            return config[name]
    raise KeyError(names[0])


def _kv_heads(config: dict, model_type: str, heads: int) -> int:
    """Key/value heads; Falcon states them through its layout flags (multi-query: one)."""
    if model_type == "falcon":
        if config.get("new_decoder_architecture"):
            return int(config.get("num_kv_heads") or heads)
        return 1 if config.get("multi_query", True) else heads
    return int(config.get("num_key_value_heads") or heads)


def _falcon_norms(config: dict) -> int:
    """ln_attn + ln_mlp in the new decoder architecture; one shared input norm in a parallel block."""
    if config.get("new_decoder_architecture"):
        return int(config.get("num_ln_in_parallel_attn") or 2)
    return 1 if config.get("parallel_attn", True) else 2
