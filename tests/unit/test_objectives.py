"""Objectives beyond SFT, before anything loads: the objective group, the data shapes and
their file:line errors, the reward registry and its plan-time checks, the GRPO group
arithmetic, and the memory terms per objective."""

import json

import pytest

from peftstudio.config.objective_schema import RewardSpec
from peftstudio.config.validate import load_config
from peftstudio.data.objective_data import (SAMPLE_FILES, WORD_PROMPTS_FILE, WORD_TASKS, generate_objective_samples,
                                             word_prompts)
from peftstudio.errors import UserError
from peftstudio.plan.memory import estimate_memory
from peftstudio.plan.pipeline import make_plan
from peftstudio.plan.resolve import resolve
from peftstudio.rewards import build_rewards, check_rewards
from tests.conftest import CPU, H100

GRPO_OK = ["objective=grpo", "training.micro_batch_size=8"]


def plan_error(*overrides) -> str:
    with pytest.raises(UserError) as caught:
        make_plan(list(overrides), hardware=CPU)
    return "\n".join(f"{p.where}: {p.message} | {p.fix}" for p in caught.value.problems)


def test_default_objective_is_sft_and_group_sets_sections():
    config, _ = load_config([])
    assert config.objective == "sft"
    config, composition = load_config(["objective=dpo", "dpo.beta=0.2"])
    assert (config.objective, config.dpo.beta, config.dpo.loss_type) == ("dpo", 0.2, "sigmoid")
    assert composition.groups["objective"] == ["dpo"]


def test_grpo_keys_are_typed_and_ranged():
    with pytest.raises(UserError) as caught:
        load_config(["objective=grpo", "grpo.num_generations=1"])
    assert "grpo.num_generations" in str(caught.value.problems[0].where)


def test_bundled_samples_are_the_generator_output():
    samples = generate_objective_samples()
    for name, rows in samples.items():
        lines = SAMPLE_FILES[name].read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows, f"rerun python -m peftstudio.data.objective_data ({name})"
    assert all(r["chosen"] != r["rejected"] for r in samples["preference"])
    assert {r["label"] for r in samples["kto"]} == {True, False}
    words = [json.loads(line) for line in WORD_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()]
    assert words == word_prompts(samples["prompt"]), "rerun python -m peftstudio.data.objective_data (word prompts)"
    assert {r["prompt"].split("\n")[0] for r in words} == set(WORD_TASKS) and len(words) > 200


def test_word_prompts_sample_is_grpo_prompt_data_plan_names():
    plan = make_plan(["objective=grpo", "data.path=embedded:word-prompts"], hardware=CPU)
    assert plan.data.format == "prompt" and "embedded:word-prompts is the bundled prompts" in plan.data.format_reason
    assert plan.data.source.endswith("sample_word_prompts.jsonl")


def test_plan_uses_the_objective_sample_and_says_the_reference():
    plan = make_plan(["objective=dpo"], hardware=CPU)
    assert plan.data.format == "preference" and "bundled preference sample" in plan.data.format_reason
    from peftstudio.plan.objectives import objective_notes

    notes = objective_notes(plan.config)
    assert "DPOTrainer" in notes[0] and "base with the adapter disabled" in notes[0] and "dropout off" in notes[0]
    assert plan.config.training.packing == "off"


def test_preference_record_errors_name_file_and_line(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                    '{"prompt": "a", "chosen": "b", "rejected": "b"}\n'
                    '{"prompt": "a", "chosen": 3, "rejected": "c"}\n')
    message = plan_error("objective=dpo", f"data.path={data}")
    assert f"{data}:2: chosen and rejected are the same" in message
    assert f"{data}:3: column 'chosen' must be text or a list of chat messages" in message


def test_chat_message_pairs_and_wrong_shape(tmp_path):
    good = tmp_path / "chat.jsonl"
    row = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "assistant", "content": "go away"}]}
    good.write_text("\n".join(json.dumps(row) for _ in range(20)) + "\n")
    plan = make_plan(["objective=dpo", f"data.path={good}"], hardware=CPU)
    assert plan.data.format == "preference"
    sft_shaped = tmp_path / "sft.jsonl"
    sft_shaped.write_text('{"instruction": "a", "output": "b"}\n')
    assert "needs preference data" in plan_error("objective=dpo", f"data.path={sft_shaped}")


@pytest.mark.parametrize("objective,data_format", [("dpo", "preference"), ("orpo", "preference"), ("kto", "kto"),
                                                   ("grpo", "prompt")])
def test_objective_formats_are_data_format_values(objective, data_format):
    overrides = [f"objective={objective}", f"data.format={data_format}"] + (GRPO_OK[1:] if objective == "grpo" else [])
    plan = make_plan(overrides, hardware=CPU)
    assert plan.data.format == data_format and plan.data.format_reason.startswith("data.format set explicitly")
    message = plan_error(f"data.format={data_format}")  # objective=sft
    assert message.startswith(f"data.format: data.format={data_format} is the data of objective=") and \
        f"set objective={objective if objective != 'orpo' else 'dpo'}" in message
    assert "a format SFT trains on" in plan_error(f"data.datasets=[{{path: embedded:sample, format: {data_format}}}]")


def test_kto_labels_checked(tmp_path):
    data = tmp_path / "kto.jsonl"
    data.write_text('{"prompt": "a", "completion": "b", "label": true}\n{"prompt": "a", "completion": "b", "label": "maybe"}\n')
    assert f"{data}:2: column 'label' must be true or false" in plan_error("objective=kto", f"data.path={data}")


def test_grpo_reward_columns_must_exist(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    message = plan_error(*GRPO_OK, f"data.path={data}")
    assert f"{data}:2: missing column 'answer', read by the reward grpo.rewards[0]" in message


def test_group_size_must_divide_the_generation_batch_with_nearest_fix():
    message = plan_error("objective=grpo", "training.micro_batch_size=6", "grpo.num_generations=4")
    assert "generation batch" in message and "not a multiple of num_generations=4" in message
    assert "training.micro_batch_size=4 or training.micro_batch_size=8" in message
    # auto: the finder probes each objective's own step (tests/integration/test_find_batch_size.py);
    # GRPO's pick is a multiple of the group size, said in plan
    assert make_plan(["objective=dpo", "training.micro_batch_size=auto"], hardware=CPU).config.objective == "dpo"
    for g in (3, 16):
        plan = make_plan(["objective=grpo", "training.micro_batch_size=auto", f"grpo.num_generations={g}",
                          "grpo.max_completion_length=8"], hardware=CPU)
        picked = plan.config.training.micro_batch_size
        assert picked % g == 0 and f"grpo.num_generations={g}" in plan.decisions["training.micro_batch_size"].reason


def test_grpo_micro_batch_candidates_keep_prompt_groups_whole():
    from peftstudio.train.batch_size import candidate_sizes, group_sizes

    config, _ = load_config(["objective=grpo", "grpo.num_generations=4"])
    assert group_sizes(config, candidate_sizes(16, None), 16) == [4, 8, 16]
    assert group_sizes(config.model_copy(update={"objective": "dpo"}), [1, 2, 4], 4) == [1, 2, 4]
    with pytest.raises(UserError, match="multiple of grpo.num_generations=4"):
        group_sizes(config, candidate_sizes(16, 2), 16)


def test_context_budget_and_orpo_is_said_experimental():
    assert "exceeds the model's context of 2048" in plan_error(*GRPO_OK, "grpo.max_prompt_length=1024",
                                                                "grpo.max_completion_length=1536")
    from peftstudio.plan.objectives import objective_notes

    plan = make_plan(["objective=orpo"], hardware=CPU)
    assert "trl.experimental" in objective_notes(plan.config)[0] and "no reference model" in objective_notes(plan.config)[0]
    assert plan.config.training.loss_impl == "plain" and plan.data.format == "preference"
    assert "full logits" in plan_error("objective=orpo", "training.loss_impl=chunked")


def test_bad_reward_specs_all_reported():
    message = plan_error(*GRPO_OK, "grpo.rewards=[{name: exact_matches}, {name: regex, pattern: '('}, "
                         "{name: 'python:no_such_module_x:f'}, {name: 'python:json:dumps'}, {name: json_field_match}]")
    assert "unknown reward 'exact_matches'" in message
    assert "is no regular expression" in message
    assert "cannot import 'no_such_module_x'" in message
    assert "the first two parameters must be prompts and completions" in message
    assert "json_field_match needs the JSON field" in message


def test_user_reward_function_signature_checked_by_import(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def good(prompts, completions, **kw):\n    return [1.0] * len(completions)\n"
                                            "def no_kwargs(prompts, completions):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_rewards([RewardSpec(name="python:my_rewards:good")]) == []
    problems = check_rewards([RewardSpec(name="python:my_rewards:no_kwargs")])
    assert "**kwargs" in problems[0].message
    reward = build_rewards([RewardSpec(name="python:my_rewards:good")])[0]
    assert reward.label == "good" and reward.function(["p"], ["c"], answer=["a"]) == [1.0]


def test_builtin_rewards_score_text_and_chat_completions():
    specs = [RewardSpec(name="exact_match"), RewardSpec(name="contains"), RewardSpec(name="format", pattern=r"\d+"),
             RewardSpec(name="regex", pattern="Par"), RewardSpec(name="json_valid"),
             RewardSpec(name="json_field_match", field="action", column="gold"),
             RewardSpec(name="length_penalty", target_length=5)]
    rewards = {r.label: r.function for r in build_rewards(specs)}
    chat = [[{"role": "assistant", "content": " Paris "}], [{"role": "assistant", "content": "in Paris, France"}]]
    columns = {"answer": ["Paris", "Paris"], "gold": ["go", "stop"]}
    assert rewards["exact_match"](["p", "p"], chat, **columns) == [1.0, 0.0]
    assert rewards["contains"](["p", "p"], chat, **columns) == [1.0, 1.0]
    assert rewards["format"](["p", "p"], ["42", "4 2"]) == [1.0, 0.0]
    assert rewards["regex"](["p"], ["Paris"]) == [1.0]
    assert rewards["json_valid"](["p", "p"], ['{"a": 1}', "{a"]) == [1.0, 0.0]
    assert rewards["json_field_match"](["p", "p"], ['{"action": "go"}', '{"action": "go"}'], **columns) == [1.0, 0.0]
    assert rewards["length_penalty"](["p", "p"], ["abc", "abcdefghij"]) == [0.0, -1.0]


def resolved(*overrides):
    config, _ = load_config(list(overrides))
    return resolve(config, H100, None).config


def test_dpo_estimate_doubles_the_batch_terms():
    sft = estimate_memory(resolved("model=qwen2_5_7b", "peft=qlora", "training.micro_batch_size=2",
                                   "training.loss_impl=chunked", "training.gradient_checkpointing=on"))
    dpo_config = resolved("model=qwen2_5_7b", "peft=qlora", "training.micro_batch_size=2", "objective=dpo",
                          "training.gradient_checkpointing=on")
    assert dpo_config.training.loss_impl == "chunked", "TRL's DPOTrainer always uses its fused LM head"
    dpo = estimate_memory(dpo_config)
    double = estimate_memory(dpo_config.model_copy(update={"objective": "sft"}), micro_batch_size=4)
    assert dpo.components["activations"] == double.components["activations"] > sft.components["activations"]
    assert dpo.components["logits and loss"] == double.components["logits and loss"]
    assert dpo.components["reference log-probs"] == 4 * 2 * 2 * sft.seq_len


def test_grpo_estimate_grows_with_num_generations():
    """One prompt per micro-batch (micro_batch_size = G) of 512 + 1024 tokens: activations, the
    loss over the G·C completion tokens and the generation cache all grow with G."""
    estimates = {g: estimate_memory(resolved("model=qwen2_5_7b", "peft=qlora", "objective=grpo", "training.gradient_checkpointing=on",
                                             f"grpo.num_generations={g}", f"training.micro_batch_size={g}",
                                             "grpo.max_prompt_length=512", "grpo.max_completion_length=1024"))
                 for g in (2, 4, 8, 16)}
    assert all(e.seq_len == 1536 for e in estimates.values())
    for name in ("activations", "logits and loss", "old and reference log-probs"):
        values = [estimates[g].components[name] for g in (2, 4, 8, 16)]
        assert values == sorted(values) and len(set(values)) == 4, name
    assert estimates[4].components["old and reference log-probs"] == 2 * estimates[2].components["old and reference log-probs"]


def grpo_evidence(tmp_path, **series):
    from peftstudio.diagnose.evidence import RunEvidence

    steps = len(next(iter(series.values())))
    records = [{"step": i + 1, "loss": 0.01 * (-1) ** i, **{k.replace("__", "/"): v[i] for k, v in series.items()}}
               for i in range(steps)]
    return RunEvidence(tmp_path, records, [])


def found(evidence):
    from peftstudio.diagnose.rules import diagnose_evidence

    return {f.problem: f for f in diagnose_evidence(evidence)}


def test_diagnose_grpo_failure_shapes(tmp_path):
    flat = found(grpo_evidence(tmp_path, reward=[0.0] * 6, rewards__exact_match__mean=[0.0] * 6, kl=[0.01] * 6))
    assert "rewards_flat_zero" in flat and "exact_match" in flat["rewards_flat_zero"].evidence
    assert "no_progress" not in flat and "divergence" not in flat, "a GRPO loss is no progress measure"
    blowup = found(grpo_evidence(tmp_path, reward=[0.5] * 6, kl=[0.02, 0.05, 0.3, 0.9, 2.5, 4.0]))
    assert "kl_blowup" in blowup and any(o.startswith("grpo.beta=") for o in blowup["kl_blowup"].overrides)
    cut = found(grpo_evidence(tmp_path, reward=[0.5] * 6, completions__clipped_ratio=[0.2, 0.4, 0.7, 0.8, 0.9, 0.9]))
    assert "completions_truncated" in cut
    hacked = found(grpo_evidence(tmp_path, reward=[0.5] * 6, rewards__contains__mean=[0.1, 0.1, 0.4, 0.6, 0.9, 0.9],
                                 rewards__exact_match__mean=[0.5, 0.5, 0.3, 0.2, 0.0, 0.0]))
    assert "reward_hacking" in hacked and "contains +" in hacked["reward_hacking"].evidence
    healthy = found(grpo_evidence(tmp_path, reward=[0.1, 0.2, 0.3, 0.3, 0.4, 0.4], kl=[0.01, 0.02, 0.03, 0.03, 0.04, 0.05],
                                  completions__clipped_ratio=[0.0] * 6))
    assert not healthy


def _fake_run(root, model="embedded:tiny-llama", **shape):
    """A run dir as an earlier run leaves it: plan.json and adapter/adapter_config.json (no weights needed to plan)."""
    (root / "adapter").mkdir(parents=True)
    saved = {"peft_type": "LORA", "r": 16, "lora_alpha": 32.0, "use_dora": False, "use_rslora": False,
             "target_modules": ["q_proj", "v_proj"], **shape}
    (root / "adapter/adapter_config.json").write_text(json.dumps(saved))
    (root / "plan.json").write_text(json.dumps({"config": {"model": {"name_or_path": model}}}))
    return root


def test_init_adapter_is_checked_and_said_in_plan(tmp_path):
    from peftstudio.config.schema import EMBEDDED_MODEL_ID
    from peftstudio.plan.init_adapter import init_adapter_note
    from peftstudio.plan.objectives import objective_notes

    run = _fake_run(tmp_path / "sft", model=EMBEDDED_MODEL_ID)
    plan = make_plan([*GRPO_OK, f"peft.init_adapter={run}"], hardware=CPU)
    assert "starts from the adapter in" in init_adapter_note(plan.config) and "q_proj, v_proj" in init_adapter_note(plan.config)
    assert "reference model is the starting adapter" in objective_notes(plan.config)[0]
    assert make_plan([*GRPO_OK, f"peft.init_adapter={run / 'adapter'}"], hardware=CPU).config.peft.init_adapter


def test_init_adapter_errors_name_the_fix(tmp_path):
    missing = plan_error(*GRPO_OK, f"peft.init_adapter={tmp_path / 'nowhere'}")
    assert "peft.init_adapter" in missing and "no adapter there" in missing
    shape = _fake_run(tmp_path / "r8", r=8, lora_alpha=16.0)
    error = plan_error(*GRPO_OK, f"peft.init_adapter={shape}")
    assert "set peft.r=8 peft.alpha=16" in error
    other = _fake_run(tmp_path / "other", model="Qwen/Qwen2.5-0.5B")
    assert "was trained on model Qwen/Qwen2.5-0.5B" in plan_error(*GRPO_OK, f"peft.init_adapter={other}")


def test_an_answer_may_be_one_message_object(tmp_path):
    """Axolotl's chat_template.default preference rows: prompt turns, then chosen / rejected as one message each."""
    data = tmp_path / "pairs.jsonl"
    row = {"conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
           "chosen": {"role": "assistant", "content": "Paris"}, "rejected": {"role": "assistant", "content": "Rome"}}
    data.write_text("\n".join(json.dumps(row) for _ in range(40)))
    plan = make_plan(["objective=dpo", f"data.path={data}", "data.columns={prompt: conversation}"], hardware=CPU)
    assert plan.data.format == "preference"


def test_grpo_time_counts_generation_paced_by_memory_bandwidth():
    """Qwen2.5-7B QLoRA on an H100: each of the 1024 decode steps reads the 4-bit weights once
    (bandwidth-bound at batch 4), so generation time is completion length × weights / bandwidth."""
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.prices import load_prices
    from peftstudio.plan.throughput import generation_seconds

    def seconds(completion: int, generations: int = 4, bandwidth: float | None = 3350.0) -> float:
        config = resolve(load_config(["model=qwen2_5_7b", "peft=qlora", "objective=grpo", f"grpo.num_generations={generations}",
                                      f"training.micro_batch_size={generations}", f"grpo.max_completion_length={completion}",
                                      "grpo.max_prompt_length=512"])[0], H100, 0.0).config
        weights = estimate_memory(config).components["base weights"]
        return generation_seconds(config, 512, 989, 0.25, bandwidth, load_prices(None).efficiency.decode, weights), weights

    long, weights = seconds(1024)
    per_step = weights / (3350e9 * 0.3)
    assert 1024 * per_step < long < 1.2 * 1024 * per_step, "decode dominates, memory-bound"
    assert seconds(512)[0] < 0.55 * long and seconds(1024, 16)[0] > long
    assert seconds(1024, bandwidth=None)[0] < 0.2 * long, "FLOPs alone would miss the decode time"
