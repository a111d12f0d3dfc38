"""Composition: groups, experiments, user files, overrides, deletion, provenance."""

import json

import pytest

from peftstudio.config.compose import CONF_DIR, compose, group_options
from peftstudio.config.validate import load_config
from peftstudio.errors import UserError


def test_defaults_compose_to_the_embedded_run():
    config, composition = load_config()
    assert config.model.name_or_path == "embedded:tiny-llama"
    assert config.peft.method == "lora" and config.data.path == "embedded:sample"
    assert config.seed == 42 and config.device == "auto"
    lines = (CONF_DIR / "model" / "tiny.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith("num_batches:"))
    assert composition.origin("training.num_batches").text == f"model=tiny (model/tiny.yaml:{line})"
    assert composition.origin("seed").text == "default"


def test_training_default_group_carries_the_spec_run_length():
    config, _ = load_config(["model=llama3_8b"])
    assert config.training.num_batches == 3738
    assert config.training.checkpoint_dir == "./checkpoints/ckpts/"
    assert config.training.output_dir == "./outputs"
    assert config.model.architecture.num_kv_heads == 8


def test_group_option_and_override_precedence(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("peft:\n  r: 8\n  alpha: 16\ntraining:\n  micro_batch_size: 2\n")
    config, composition = load_config(["peft=dora", "peft.r=4"], user)
    assert config.peft.method == "dora" and config.peft.use_dora
    assert config.peft.r == 4, "command-line override beats the user file"
    assert config.peft.alpha == 16, "user file beats the group file"
    assert composition.origin("peft.r").text == "override peft.r=4"
    assert composition.origin("peft.alpha").text == f"user file ({user}:3)"
    assert composition.origin("peft.dropout").text.startswith("peft=dora (peft/dora.yaml:")


def test_json_user_file(tmp_path):
    user = tmp_path / "run.json"
    user.write_text(json.dumps({"training": {"log_interval_steps": 3}, "seed": 7}))
    config, composition = load_config([], user)
    assert config.training.log_interval_steps == 3 and config.seed == 7
    assert composition.origin("seed").text.startswith("user file")


def test_user_file_can_select_groups(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("defaults:\n  - peft: rslora\nseed: 3\n")
    config, _ = load_config([], user)
    assert config.peft.method == "rslora" and config.peft.use_rslora


def test_experiment_overrides_groups_and_selects_its_own():
    config, composition = load_config(["+experiment=quick_test"])
    assert config.experiment == "quick_test"
    assert config.training.num_batches == 20
    assert composition.origin("training.num_batches").text.startswith("experiment=quick_test")
    assert composition.groups["training"] == ["quick"]
    assert config.training.save_total_limit == 2, "value from training/quick.yaml selected by the experiment"


def test_command_line_group_choice_beats_experiment_choice():
    _, composition = load_config(["+experiment=quick_test", "training=aggressive"])
    assert composition.groups["training"] == ["aggressive"]


def test_delete_restores_the_schema_default():
    config, composition = load_config(["~training.micro_batch_size"])
    assert config.training.micro_batch_size == 4
    assert composition.origin("training.micro_batch_size").text == "default"


def test_delete_of_unset_key_is_an_error():
    with pytest.raises(UserError, match="cannot delete training.packing"):
        load_config(["~training.packing"])


def test_typed_values_lists_and_interpolation():
    config, _ = load_config(["peft.target_modules=[q_proj,v_proj]", "training.checkpoint_dir=${training.output_dir}/ckpt"])
    assert config.peft.target_modules == ["q_proj", "v_proj"]
    assert config.training.checkpoint_dir == "./outputs/ckpt"


def test_yaml_booleans_for_switches(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("training:\n  gradient_checkpointing: on\n  packing: off\n")
    config, _ = load_config([], user)
    assert (config.training.gradient_checkpointing, config.training.packing) == ("on", "off")


def test_platform_group_is_global():
    config, composition = load_config(["platform=cpu"])
    assert config.platform == "cpu" and config.device == "cpu"
    assert config.training.gradient_checkpointing == "off"
    assert composition.origin("device").text.startswith("platform=cpu (platform/cpu.yaml:")


def test_groups_offer_what_the_spec_names():
    assert {"tiny", "gemma3_270m", "gemma3_1b", "gemma3_4b", "llama3_8b", "mistral_7b", "qwen2_5_7b",
            "llama2_13b"} <= set(group_options("model"))
    assert {"lora", "dora", "rslora", "pissa"} <= set(group_options("peft"))
    assert {"default", "aggressive", "quick"} <= set(group_options("training"))
    assert {"quick_test", "memory_constrained", "high_quality", "production"} <= set(group_options("experiment"))
    assert {"auto", "cpu"} <= set(group_options("platform"))


def test_composition_keeps_problems_for_validation():
    composition = compose(["peft=nope"])
    assert composition.problems and "options: dora, lora, pissa, qdora, qlora, rslora" in composition.problems[0].message


def test_naming_a_model_without_a_preset_drops_the_embedded_presets_numbers(tmp_path):
    # model=tiny is only the default: its architecture, run length and learning rate describe
    # the embedded model, so they must not leak onto a model the user names.
    config, composition = load_config(["model.name_or_path=org/other-model"])
    assert config.model.architecture is None
    assert config.training.num_batches == 3738 and config.optim.learning_rate == 2e-4
    assert "model" not in composition.groups
    user_file = tmp_path / "run.yaml"
    user_file.write_text("model:\n  name_or_path: org/other-model\n")
    assert load_config(config_file=user_file)[0].model.architecture is None
    # A preset chosen on purpose keeps its numbers for a sibling checkpoint (e.g. the instruct model).
    config, _ = load_config(["model=llama3_8b", "model.name_or_path=meta-llama/Llama-3.1-8B-Instruct"])
    assert config.model.architecture.num_layers == 32


def test_non_ascii_override_values_are_accepted():
    from peftstudio.config.validate import load_config

    config, _ = load_config(["logging.wandb_project=проект-café", "logging.mlflow_experiment='déjà'"])
    assert config.logging.wandb_project == "проект-café" and config.logging.mlflow_experiment == "déjà"
