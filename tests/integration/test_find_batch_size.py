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


def _shapes_seen(monkeypatch) -> list[tuple[int, int]]:
    """(rows, tokens) of every forward the probes run, recorded by a hook on the probed model."""
    from peftstudio.train import batch_size

    seen: list[tuple[int, int]] = []
    build = batch_size.build_prober

    def recording(*args, **kwargs):
        prober, seq_len = build(*args, **kwargs)
        # on the base model: PeftModel.generate calls it directly, not the PeftModel's forward
        prober.model.get_base_model().register_forward_pre_hook(lambda _, a, kw: seen.append(tuple(kw["input_ids"].shape)),
                                                                with_kwargs=True)
        return prober, seq_len

    monkeypatch.setattr(batch_size, "build_prober", recording)
    return seen


def test_objectives_probe_their_own_step(monkeypatch, model_cache):
    """DPO counts pairs (2 sequences each, plus the reference pass); GRPO generates completions
    to exactly max_completion_length inside the probe and keeps groups whole."""
    from peftstudio import api

    seen = _shapes_seen(monkeypatch)
    found = api.find_batch_size(["model=tiny", "objective=dpo", "training.micro_batch_size=2",
                                 "training.gradient_accumulation_steps=1", "data.max_samples=40"], max_size=2)
    assert [p.micro_batch_size for p in found.probes] == [2] and found.probes[0].fits
    assert seen == [(4, found.seq_len), (4, found.seq_len)]  # reference (adapter off, no grad) + policy, chosen + rejected
    seen.clear()
    found = api.find_batch_size(["model=tiny", "objective=grpo", "grpo.num_generations=2", "grpo.max_completion_length=5",
                                 "training.micro_batch_size=2", "training.gradient_accumulation_steps=2",
                                 "data.max_samples=40"], max_size=4)
    sizes = [p.micro_batch_size for p in found.probes]
    assert set(sizes) <= {2, 4} and found.micro_batch_size in sizes  # multiples of G that divide 4
    prompt = seen[0][1]
    assert found.seq_len == prompt + 5 and seen[0][0] == sizes[0]  # generation starts from the longest prompt
    assert sum(1 for shape in seen if shape[1] == 1) == 4 * len(sizes)  # then 4 cached decode steps: 5 tokens each
    assert seen[-2:] == [(sizes[-1], prompt + 5)] * 2  # reference (beta > 0) and policy step on prompt + completion
    assert "max_completion_length=5" in found.sample
