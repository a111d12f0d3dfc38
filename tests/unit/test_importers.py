"""`peftstudio import`: three foreign shapes → a peftstudio YAML that validates with the
expected values; every key that cannot be mapped is listed, never dropped."""

import json
from pathlib import Path

import pytest
import yaml

from peftstudio.config.importers import import_file
from peftstudio.config.validate import load_config
from peftstudio.errors import UserError

WIZARD = {"algorithm": "qlora", "rank": 8, "alpha": 16, "quantization": "nf4", "double_quantization": True,
          "learning_rate": 2e-4, "batch_size": 1, "gradient_accumulation_steps": 16, "num_epochs": 2,
          "gradient_checkpointing": True}
AXOLOTL = """\
base_model: meta-llama/Llama-3.1-8B
adapter: qlora
load_in_4bit: true
lora_r: 32
lora_alpha: 64
lora_dropout: 0.05
lora_target_linear: true
sequence_len: 2048
sample_packing: false
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 3
learning_rate: 0.0002
optimizer: paged_adamw_8bit
lr_scheduler: cosine
warmup_steps: 10
bf16: auto
gradient_checkpointing: true
val_set_size: 0.05
datasets:
  - path: data/train.jsonl
    type: alpaca
output_dir: ./out
wandb_project: my-project
wandb_entity: my-team
special_tokens:
  pad_token: "<|pad|>"
"""


def roundtrip(tmp_path, name: str, text: str, allow_changes: bool = False):
    source = tmp_path / name
    source.write_text(text)
    result = import_file(source, allow_changes=allow_changes)
    target = tmp_path / "imported.yaml"
    target.write_text(result.yaml_text)
    config, composition = load_config([], target)  # what `peftstudio validate` runs
    return result, config, composition


def test_wizard_json(tmp_path):
    result, config, composition = roundtrip(tmp_path, "wizard.json", json.dumps(WIZARD))
    assert result.kind == "wizard JSON" and not result.refused
    assert composition.groups["peft"] == ["qlora"]
    peft, training = config.peft, config.training
    assert (peft.method, peft.r, peft.alpha, peft.quantization, peft.double_quant) == ("qlora", 8, 16.0, "nf4", True)
    assert config.optim.learning_rate == 2e-4
    assert (training.micro_batch_size, training.gradient_accumulation_steps, training.num_epochs,
            training.gradient_checkpointing) == (1, 16, 2, "on")
    assert result.counts()["mapped"] == len(WIZARD)


def test_hf_sft_config_json(tmp_path):
    # Written by trl 1.16's SFTConfig(...).to_json_string() (bf16 on, as on a bf16 GPU).
    text = (Path(__file__).parent / "data/sft_config.json").read_text()
    result, config, _ = roundtrip(tmp_path, "args.json", text)
    assert result.kind.startswith("HF TrainingArguments")
    training = config.training
    assert (training.micro_batch_size, training.gradient_accumulation_steps, training.num_epochs) == (2, 8, 3)
    assert (training.log_interval_steps, training.save_interval_steps, training.eval_interval_steps) == (5, 50, 25)
    assert (training.precision, training.max_seq_length, training.output_dir) == ("bf16", 512, "out")
    assert config.optim.learning_rate == 1e-4 and config.optim.name == "adamw_torch" and config.logging.tensorboard
    verdicts = {o.key: o.verdict.kind for o in result.outcomes}
    assert verdicts["per_device_eval_batch_size"] == "ignored" and set(json.loads(text)) <= set(verdicts)
    assert not any("hub_token" in row and "<redacted>" not in row for row in result.report())


def test_axolotl_yaml(tmp_path):
    result, config, composition = roundtrip(tmp_path, "axolotl.yml", AXOLOTL)
    assert result.kind == "Axolotl YAML" and composition.groups["peft"] == ["qlora"]
    assert (config.model.name_or_path, config.peft.r, config.peft.alpha, config.peft.target_modules) == \
        ("meta-llama/Llama-3.1-8B", 32, 64.0, "all-linear")
    assert (config.training.max_seq_length, config.training.packing, config.training.num_epochs) == (2048, "off", 3)
    assert (config.data.path, config.data.format, config.data.validation_split) == ("data/train.jsonl", "instruction", 0.05)
    assert config.logging.wandb and config.logging.wandb_project == "my-project"
    assert config.optim.name == "paged_adamw_8bit"
    verdicts = {o.key: o.verdict.kind for o in result.outcomes}
    assert (verdicts["wandb_entity"], verdicts["special_tokens"]) == ("ignored", "approximated")
    assert set(yaml.safe_load(AXOLOTL)) <= set(verdicts)


def test_a_value_the_schema_rejects_is_refused_never_dropped(tmp_path):
    source = tmp_path / "w.json"
    source.write_text(json.dumps({**WIZARD, "rank": 1000}))
    with pytest.raises(UserError) as refused:
        import_file(source)
    (problem,) = refused.value.problems
    assert problem.where == "w.json: rank" and "rejected by the schema" in problem.message
    assert "tmp" not in problem.message, "no temporary file is cited"
    result, config, _ = roundtrip(tmp_path, "w2.json", json.dumps({**WIZARD, "rank": 1000}), allow_changes=True)
    assert config.peft.r == 16 and "#   rank = 1000" in result.yaml_text


def test_unknown_shape_is_a_user_error(tmp_path):
    source = tmp_path / "x.json"
    source.write_text(json.dumps({"foo": 1}))
    with pytest.raises(UserError, match="not a recognised config"):
        import_file(source)
