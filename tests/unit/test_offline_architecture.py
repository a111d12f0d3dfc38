"""Where a plan finds a model's architecture offline, and what it says when it cannot: the HF
cache, the catalogue, a local dir with only config.json, a dir with nothing, an unknown hub id,
and a preset combined with another model."""

from __future__ import annotations

import json

import pytest

from peftstudio.config.known_models import cached_config, find_architecture
from peftstudio.config.schema import ModelSettings
from peftstudio.config.validate import load_config
from peftstudio.errors import UserError
from peftstudio.plan.architecture import base_parameters
from peftstudio.plan.fit import check_fit
from peftstudio.plan.pipeline import make_plan
from peftstudio.plan.resolve import resolve
from tests.conftest import CPU, RTX4090

SMALL_LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1024, "tie_word_embeddings": True,
               "max_position_embeddings": 2048}


def fake_hub_cache(root, repo_id: str, config: dict, revision: str = "main"):
    """The layout huggingface_hub writes: models--ORG--NAME/refs/REV → snapshots/SHA/config.json."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text("0123abcd")
    return root


def test_the_hf_cache_is_read_for_the_revision_asked(tmp_path, monkeypatch):
    cache = fake_hub_cache(tmp_path, "org/cached-model", SMALL_LLAMA)
    assert cached_config("org/cached-model", None, cache) == cache / "models--org--cached-model/snapshots/0123abcd/config.json"
    assert cached_config("org/cached-model", "v2", cache) is None  # another revision is not guessed
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    found = find_architecture(ModelSettings(name_or_path="org/cached-model"))
    assert (found.architecture.num_layers, found.architecture.hidden_size) == (2, 256)
    assert "Hugging Face cache" in found.source


def test_the_catalogue_answers_for_a_hub_id_not_in_the_cache():
    found = find_architecture(ModelSettings(name_or_path="Qwen/Qwen2.5-0.5B-Instruct"))
    assert base_parameters(found.architecture) == 494_032_768 and "catalogue" in found.source


def test_an_unknown_hub_id_plans_with_memory_time_and_cost_said_unknown(tmp_path):
    plan = make_plan(["model.name_or_path=some-org/not-a-real-model", "peft=qlora",
                      f"training.output_dir={tmp_path}/out", f"training.checkpoint_dir={tmp_path}/ck"], hardware=CPU)
    memory = plan.memory
    assert memory["estimate"] is None and memory["fits"] is None
    assert "not known offline" in memory["unknown"] and "model.architecture" in memory["unknown"]
    assert any(w.startswith("memory, time and cost unknown") for w in plan.warnings)


def test_a_70b_qlora_run_does_not_fit_a_24gb_machine():
    config, _ = load_config(["model.name_or_path=meta-llama/Llama-3.1-70B-Instruct", "peft=qlora"])
    report = check_fit(resolve(config, RTX4090, None).config, RTX4090)
    assert report.to_dict()["fits"] is False and "catalogue" in report.architecture


def test_a_dir_with_only_config_json_plans_with_estimated_tokens(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(SMALL_LLAMA))
    plan = make_plan([f"model.name_or_path={model}", f"training.output_dir={tmp_path}/out",
                      f"training.checkpoint_dir={tmp_path}/ck"], hardware=CPU)
    assert not plan.data.tokens_measured
    assert any("has a config.json but no tokenizer files" in w for w in plan.warnings)
    assert plan.memory["estimate"]["base_parameters"] == base_parameters(find_architecture(
        ModelSettings(name_or_path=str(model))).architecture)


def test_a_dir_with_neither_config_nor_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no config.json / tokenizer files in"):
        make_plan([f"model.name_or_path={tmp_path}"], hardware=CPU)


def test_a_preset_with_another_model_is_refused_unless_the_numbers_are_stated_or_the_same():
    with pytest.raises(UserError) as error:
        load_config(["model=llama3_8b", "model.name_or_path=Qwen/Qwen2.5-7B"])
    problem = error.value.problems[0]
    assert problem.where == "model.name_or_path" and "model=llama3_8b" in problem.message and "Qwen/Qwen2.5-7B" in problem.message
    # the user states the numbers: their responsibility
    config, _ = load_config(["model=llama3_8b", "model.name_or_path=org/llama-variant", "model.architecture.num_layers=30"])
    assert config.model.architecture.num_layers == 30
    # an instruct twin with exactly the preset's numbers (the catalogue says so)
    assert load_config(["model=llama3_8b", "model.name_or_path=meta-llama/Llama-3.1-8B-Instruct"])[0].model.architecture
    # a twin whose numbers differ (context length) is not
    with pytest.raises(UserError):
        load_config(["model=qwen2_5_7b", "model.name_or_path=Qwen/Qwen2.5-7B-Instruct"])


def test_unknown_and_half_fused_targets_are_refused_per_family():
    for overrides, expected in ((["model.name_or_path=microsoft/Phi-3.5-mini-instruct", "peft.target_modules=[q_proj]"],
                                 "match no linear layer"),
                                (["model.name_or_path=mistralai/Mixtral-8x7B-v0.1", "peft.target_modules=[w1]"],
                                 "fused into one experts.gate_up_proj"),
                                (["model.name_or_path=mistralai/Mixtral-8x7B-v0.1", "peft=dora"], "DoRA cannot adapt")):
        with pytest.raises(UserError, match=expected):
            make_plan(overrides, hardware=CPU)


def test_preview_needs_the_tokenizer_files_and_says_so(tmp_path):
    from peftstudio import api

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(SMALL_LLAMA))
    with pytest.raises(UserError, match="has a config.json but no tokenizer files.*preview-data needs the tokenizer"):
        api.preview_data([f"model.name_or_path={model}"], rows=1)
