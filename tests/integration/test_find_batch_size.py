"""find-batch-size and micro_batch_size=auto probe with the tokenizer and tokens the plan
prepared: a base model without a chat template trains with the template file it is given."""

import json
import shutil

from tests.conftest import run_cli

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def base_model_without_template(model_cache, target):
    """The embedded model as a base model would ship: no chat template in its tokenizer."""
    from peftstudio.data.embedded import embedded_model_dir

    source = embedded_model_dir(model_cache)
    target.mkdir()
    for name in MODEL_FILES:
        shutil.copy(source / name, target / name)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    assert not (target / "chat_template.jinja").exists()
    return target


def test_find_batch_size_and_auto_micro_batch_use_the_plans_chat_template(tmp_path, model_cache):
    model = base_model_without_template(model_cache, tmp_path / "base")
    from peftstudio.data.embedded import embedded_model_dir

    template = embedded_model_dir(model_cache) / "chat_template.jinja"
    run = [f"model.name_or_path={model}", f"data.chat_template={template}", "data.max_samples=40"]
    found = run_cli("find-batch-size", *run, "--memory-budget", "64MiB", "--max", "4",
                    "--output", str(tmp_path / "batch.json"), cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads((tmp_path / "batch.json").read_text())["probes"]
    trained = run_cli("train", *run, "training.micro_batch_size=auto", "training.num_batches=1",
                      "data.validation_split=0", "--memory-budget", "64MiB", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "probe micro-batch" in trained.stdout
