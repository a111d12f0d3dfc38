"""Import details the corpus does not pin: detection, refusal and --allow-changes, defaults of
the source tool, nulls, several datasets, convert round-trips, and the seeds' own spellings."""

import json
from pathlib import Path

import pytest
import yaml

from peftstudio.config.compose import compose
from peftstudio.config.importers import ImportRefused, import_file
from peftstudio.config.importers.convert import convert
from peftstudio.config.validate import load_config
from peftstudio.data.prepare import prepare_data
from peftstudio.errors import UserError

CORPUS = Path(__file__).parents[1] / "data/import_corpus"
LF_SFT = CORPUS / "llamafactory/train_lora__qwen3_lora_sft.yaml"


def imported_config(tmp_path, result):
    target = tmp_path / "imported.yaml"
    target.write_text(result.yaml_text)
    return load_config([], target)[0]


def test_llamafactory_yaml_is_not_taken_for_training_arguments(tmp_path):
    with pytest.raises(ImportRefused, match="dataset-info"):
        import_file(LF_SFT)
    result = import_file(LF_SFT, CORPUS / "llamafactory/dataset_info.json")
    config = imported_config(tmp_path, result)
    assert result.kind == "LLaMA-Factory YAML"
    assert (config.model.name_or_path, config.peft.r, config.peft.alpha, config.peft.target_modules) == \
        ("Qwen/Qwen3-4B-Instruct-2507", 8, 16.0, "all-linear")
    assert config.training.max_seq_length == 2048 and config.data.max_samples == 1000
    assert config.data.path.endswith("identity.json") and config.data.datasets[0].path.endswith("alpaca_en_demo.json")


def test_full_fine_tune_and_ppo_are_refused_unless_allowed(tmp_path):
    source = tmp_path / "a.yml"
    source.write_text("base_model: org/m\nrl: ppo\nlearning_rate: 1e-4\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n")
    with pytest.raises(ImportRefused) as refused:
        import_file(source)
    assert {p.where for p in refused.value.problems} == {"a.yml: adapter", "a.yml: rl"}
    result = import_file(source, allow_changes=True)
    assert "# CHANGED by --allow-changes (2 key(s))" in result.yaml_text and "#   rl = \"ppo\"" in result.yaml_text


def test_orpo_maps_to_the_experimental_trainer(tmp_path):
    source = tmp_path / "a.yml"
    source.write_text("base_model: org/m\nadapter: lora\nrl: orpo\norpo_alpha: 0.2\nlearning_rate: 1e-4\n")
    config = import_file(source).yaml_text
    assert "objective: orpo" in config or "- objective: orpo" in config, config


def test_dpo_and_kto_objectives_map_with_their_settings(tmp_path):
    source = tmp_path / "a.yml"
    source.write_text("base_model: org/m\nadapter: lora\nrl: dpo\nrl_beta: 0.3\nlearning_rate: 1e-4\n"
                      "datasets:\n  - path: d.jsonl\n    type: alpaca\n")
    config = imported_config(tmp_path, import_file(source))
    assert (config.objective, config.dpo.beta) == ("dpo", 0.3)
    source.write_text("base_model: org/m\nadapter: lora\nrl: ipo\nlearning_rate: 1e-4\n"
                      "datasets:\n  - path: d.jsonl\n    type: alpaca\n")
    config = imported_config(tmp_path, import_file(source))
    assert (config.objective, config.dpo.loss_type) == ("dpo", "ipo")


def test_axolotl_defaults_apply_and_nulls_mean_unset(tmp_path):
    source = tmp_path / "a.yml"
    source.write_text("base_model: org/m\nadapter: lora\nlora_r: null\nlearning_rate: 1e-4\n"
                      "datasets:\n  - path: d.jsonl\n    type: alpaca\noptimizer: adamw_bnb_8bit\nevals_per_epoch: 4\n")
    config = imported_config(tmp_path, import_file(source))
    assert (config.data.validation_split, config.peft.dropout, config.optim.weight_decay) == (0.0, 0.0, 0.0)
    assert (config.optim.name, config.optim.warmup_steps, config.training.evals_per_epoch) == ("adamw_8bit", 0, 4)
    assert config.peft.r == 16, "lora_r: null is unset: peftstudio's rank stays (no error)"


def test_chat_template_dataset_roles_and_two_datasets_train_together(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                                     {"from": "gpt", "value": "yo"}]}) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"q": f"x{i}", "a": "y"}) for i in range(9)) + "\n")
    source = tmp_path / "a.yml"
    source.write_text(yaml.safe_dump({"base_model": "org/m", "adapter": "lora", "learning_rate": 1e-4, "datasets": [
        {"path": str(tmp_path / "a.jsonl"), "type": "chat_template", "field_messages": "conversations",
         "message_property_mappings": {"role": "from", "content": "value"}},
        {"path": str(tmp_path / "b.jsonl"), "type": {"field_instruction": "q", "field_output": "a"}}]}))
    config = imported_config(tmp_path, import_file(source))
    assert (config.data.format, config.data.datasets[0].columns) == ("sharegpt", {"instruction": "q", "output": "a"})
    data = prepare_data(config.data)
    assert len(data.train_rows) == 10 and all("messages" in row for row in data.train_rows)


@pytest.mark.parametrize("tool", ["axolotl", "trl", "llamafactory"])
def test_convert_round_trips(tmp_path, tool):
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                                               {"role": "assistant", "content": "b"}]}) + "\n")
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"defaults": [{"peft": "qlora"}], "model": {"name_or_path": "org/m"},
                                   "peft": {"r": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"]},
                                   "data": {"path": str(tmp_path / "d.jsonl") if tool != "trl" else "org/chat",
                                            "format": "chat", "validation_split": 0.0},
                                   "training": {"micro_batch_size": 2, "precision": "bf16", "packing": "off",
                                                "gradient_checkpointing": "on", "attention": "sdpa"},
                                   "optim": {"learning_rate": 1e-4, "warmup_steps": 5, "name": "paged_adamw_8bit"}}))
    original = load_config([], run)[0]
    converted = convert(load_config([], run)[0], tool, run.name)
    for name, text in converted.sidecars.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "converted.yaml").write_text(converted.text)
    info = tmp_path / "dataset_info.json" if converted.sidecars else None
    back = imported_config(tmp_path, import_file(tmp_path / "converted.yaml", info, allow_changes=tool == "trl"))
    for section in ("peft", "optim"):
        assert getattr(back, section) == getattr(original, section), section
    keys = ("micro_batch_size", "precision", "packing", "gradient_checkpointing", "attention", "max_seq_length", "loss_on",
            "num_batches", "log_interval_steps", "save_interval_steps", "eval_interval_steps")
    assert [getattr(back.training, k) for k in keys] == [getattr(original.training, k) for k in keys]
    assert (back.model.name_or_path, back.data.path, back.data.format) == \
        (original.model.name_or_path, original.data.path, original.data.format if tool != "trl" else "auto")


def test_the_seeds_spellings_are_named_aliases():
    composition = compose(["checkpoint_dir=~/my_models/checkpoints/", "model.lora_rank=8", "optimizer.learning_rate=1e-5",
                           "training.seed=43", "training.device=cpu", "data.columns.prompt=question",
                           "data.columns.completion=answer", "data.path=my data.jsonl"])
    values = composition.values
    assert not composition.problems
    assert (values["training"]["checkpoint_dir"], values["peft"]["r"], values["optim"]["learning_rate"],
            values["seed"], values["device"]) == ("~/my_models/checkpoints/", 8, 1e-5, 43, "cpu")
    assert values["data"]["columns"] == {"prompt": "question", "completion": "answer"}
    assert values["data"]["path"] == "my data.jsonl"
    assert "model.lora_rank is peft.r" in str(composition.origin("peft.r"))


def test_an_unreadable_override_is_one_line_with_the_quoting_that_works():
    composition = compose(["data.path=[a"])
    (problem,) = composition.problems
    assert "cannot be read" in problem.message and "data.path='[a'" in problem.fix and "\n" not in problem.message


def test_an_unknown_file_is_refused_naming_the_formats(tmp_path):
    source = tmp_path / "x.yaml"
    source.write_text("foo: 1\n")
    with pytest.raises(UserError, match="Axolotl YAML, LLaMA-Factory YAML.*torchtune"):
        import_file(source)


def test_per_epoch_cadence_becomes_step_intervals_with_a_reason():
    from peftstudio.plan.pipeline import make_plan
    from tests.conftest import CPU

    plan = make_plan(["training.evals_per_epoch=2", "training.saves_per_epoch=1", "training.micro_batch_size=4"],
                     hardware=CPU)
    per_epoch = plan.schedule.steps_per_epoch
    assert plan.config.training.eval_interval_steps == max(per_epoch // 2, 1)
    assert plan.config.training.save_interval_steps == per_epoch
    assert "training.evals_per_epoch=2" in plan.decisions["training.eval_interval_steps"].reason


def test_text_datasets_do_not_mix_with_conversations(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "plain"}) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    config = load_config([f"data.path={tmp_path / 't.jsonl'}", f"data.datasets=[{{path: {tmp_path / 'c.jsonl'}}}]",
                          "data.validation_split=0"])[0]
    with pytest.raises(UserError, match="mix plain text"):
        prepare_data(config.data)


def test_an_objective_maps_once_peftstudio_has_it(monkeypatch):
    from peftstudio.config import compose as compose_module
    from peftstudio.config.importers.common import objective_verdict
    from peftstudio.config.importers.table import Refused

    monkeypatch.setattr(compose_module, "group_options", lambda group: ["sft"] if group == "objective" else [])
    with pytest.raises(Refused, match="dpo is not available"):
        objective_verdict("dpo", "rl")
    monkeypatch.setattr(compose_module, "group_options", lambda group: ["sft", "dpo"] if group == "objective" else [])
    assert objective_verdict("dpo", "rl").pairs == [("defaults.objective", "dpo")]
    assert objective_verdict("sigmoid", "loss_type").pairs == [("defaults.objective", "dpo"), ("dpo.loss_type", "sigmoid")]


def test_an_alias_can_be_deleted_by_its_own_name():
    assert compose(["training.seed=7", "~training.seed"]).values["seed"] == 42


LF_IMAGE_YAML = {"model_name_or_path": "google/gemma-3-4b-it", "stage": "sft", "finetuning_type": "lora",
                 "lora_target": "all", "dataset": "frames", "cutoff_len": 1024}


def _lf_image_info(tmp_path, file_name="frames.json", column="images"):
    info = {"frames": {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages", "images": column},
                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path / "dataset_info.json"


def test_llamafactory_images_column_is_kept_where_its_meaning_is(tmp_path):
    (tmp_path / "lf.yaml").write_text(yaml.safe_dump({**LF_IMAGE_YAML, "freeze_vision_tower": False}))
    result = import_file(tmp_path / "lf.yaml", _lf_image_info(tmp_path))
    config = imported_config(tmp_path, result)
    assert config.peft.target_scope == "all"  # LLaMA-Factory's unfrozen vision tower gets LoRA too
    dataset = next(o for o in result.outcomes if o.key == "dataset")
    assert dataset.verdict.kind == "approximated" and "image_max_pixels" in dataset.verdict.note
    for entry, extra, refused in [({"file_name": "sub/frames.json"}, {}, "media_dir"), ({"column": "pics"}, {}, "named images"),
                                  ({}, {"image_max_pixels": 262144}, "resize them beforehand"),
                                  ({}, {"freeze_multi_modal_projector": False}, "projector")]:
        (tmp_path / "lf.yaml").write_text(yaml.safe_dump({**LF_IMAGE_YAML, **extra}))
        with pytest.raises(ImportRefused, match=refused):
            import_file(tmp_path / "lf.yaml", _lf_image_info(tmp_path, **entry))


def test_axolotl_processor_type_is_kept_and_image_resizing_refused(tmp_path):
    base = {"base_model": "google/gemma-3-4b-it", "adapter": "lora", "lora_r": 8, "sequence_len": 512,
            "micro_batch_size": 1, "processor_type": "AutoProcessor", "skip_prepare_dataset": True,
            "datasets": [{"path": "org/frames", "type": "chat_template"}]}
    (tmp_path / "a.yml").write_text(yaml.safe_dump(base))
    kinds = {o.key: o.verdict.kind for o in import_file(tmp_path / "a.yml").outcomes}
    assert kinds["processor_type"] == "mapped" and kinds["skip_prepare_dataset"] == "ignored"
    (tmp_path / "a.yml").write_text(yaml.safe_dump({**base, "image_size": 512}))
    with pytest.raises(ImportRefused, match="resize"):
        import_file(tmp_path / "a.yml")


@pytest.mark.parametrize("scope", ["language", "all"])
def test_convert_of_an_image_text_config_says_its_scope_and_grid(tmp_path, scope):
    config = load_config(["model=gemma3_4b", f"peft.target_scope={scope}", "data.image_grid=2x2", "data.format=chat",
                          "training.micro_batch_size=1"])[0]
    converted = convert(config, "llamafactory", "run.yaml")
    values = yaml.safe_load(converted.text)
    assert values["freeze_vision_tower"] == (scope == "language") and values["freeze_multi_modal_projector"]
    assert any("data.image_grid=2x2 has no equivalent" in note for note in converted.notes)
    (tmp_path / "lf.yaml").write_text(converted.text)
    (tmp_path / "dataset_info.json").write_text(converted.sidecars["dataset_info.json"])
    back = imported_config(tmp_path, import_file(tmp_path / "lf.yaml", tmp_path / "dataset_info.json", allow_changes=True))
    assert back.peft.target_scope == scope
    axolotl = convert(config, "axolotl", "run.yaml")
    assert yaml.safe_load(axolotl.text)["processor_type"] == "AutoProcessor"
    assert any(f"peft.target_scope={scope}" in note for note in axolotl.notes)


def test_preference_datasets_map_their_columns_or_are_refused_with_why(tmp_path):
    """Axolotl `rl: dpo` string types (chatml.intel, chatml.argilla) and LLaMA-Factory `ranking: true`
    alpaca datasets keep their meaning as prompt/chosen/rejected columns; the shapes peftstudio
    does not read (whole conversations, single-message sides, a joined query) are refused."""
    source = tmp_path / "a.yml"
    source.write_text("base_model: org/m\nadapter: lora\nrl: dpo\ndatasets:\n  - path: Intel/orca_dpo_pairs\n"
                      "    type: chatml.intel\n  - path: argilla/distilabel-intel-orca-dpo-pairs\n    type: chatml.argilla\n")
    result = import_file(source)
    config = imported_config(tmp_path, result)
    assert config.objective == "dpo" and config.data.columns == {"prompt": "question"}
    assert config.data.datasets[0].columns == {"prompt": "instruction", "chosen": "chosen_response",
                                               "rejected": "rejected_response"}
    assert "system column is not read" in result.yaml_text
    source.write_text("base_model: org/m\nadapter: lora\nrl: dpo\ndatasets:\n  - path: d\n    type: chat_template.default\n"
                      "    field_messages: conversation\n    field_chosen: good\n")
    assert imported_config(tmp_path, import_file(source)).data.columns == {"prompt": "conversation", "chosen": "good"}
    source.write_text("base_model: org/m\nadapter: lora\nrl: dpo\ndatasets:\n  - path: d\n    type: chatml.ultra\n")
    with pytest.raises(ImportRefused, match="whole conversations"):
        import_file(source)
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"pairs": {"file_name": "pairs.json", "ranking": True, "columns": {
        "prompt": "instruction", "chosen": "good", "rejected": "bad"}}, "chat": {"file_name": "c.json", "ranking": True,
        "formatting": "sharegpt"}}))
    lf = tmp_path / "lf.yaml"
    lf.write_text("model_name_or_path: org/m\nstage: dpo\nfinetuning_type: lora\nlora_target: all\ndataset: pairs\n")
    config = imported_config(tmp_path, import_file(lf, info))
    assert config.data.path.endswith("pairs.json") and config.data.columns == {"prompt": "instruction", "chosen": "good", "rejected": "bad"}
    lf.write_text("model_name_or_path: org/m\nstage: dpo\nfinetuning_type: lora\nlora_target: all\ndataset: chat\n")
    with pytest.raises(ImportRefused, match="from/value"):
        import_file(lf, info)
