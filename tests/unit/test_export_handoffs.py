"""Hand-off pieces that need no trained run: Ollama templates from real chat templates, vLLM's
refusals, export's option checks."""

from pathlib import Path

import pytest

from peftstudio.errors import UserError
from peftstudio.export.handoff import check_options
from peftstudio.export.ollama import CONVERSATION, assemble, go_template, measure_turns, modelfile
from peftstudio.export.vllm_layout import check_tensor_names, refusals

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_tokenizers"


@pytest.fixture(scope="module")
def embedded_tokenizer(model_cache):
    from transformers import AutoTokenizer

    from peftstudio.model.embedded import ensure_embedded_model

    return AutoTokenizer.from_pretrained(ensure_embedded_model())


@pytest.mark.parametrize("name,system", [("qwen2_5/chat_template.jinja", True), ("gemma3/chat_template.jinja", False),
                                         ("llama3_2/chat_template_meta_llama3_8b_instruct.jinja", True)])
def test_ollama_template_reproduces_real_chat_templates(embedded_tokenizer, name, system):
    """The families' own templates (rendered with the embedded tokenizer's special tokens: the
    turn structure is the template's, loading each family's 4-20 MB tokenizer adds nothing)."""
    tokenizer = embedded_tokenizer
    tokenizer.chat_template = (REAL / name).read_text(encoding="utf-8")
    text, checked = modelfile(tokenizer, "model-f16.gguf", [tokenizer.eos_token])
    assert text.startswith("FROM ./model-f16.gguf\nTEMPLATE \"\"\"") and f'PARAMETER stop "{tokenizer.eos_token}"' in text
    assert ("SYSTEM message is not passed on" not in checked) == system

    def render(messages, generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    pieces = measure_turns(render)
    longer = [*CONVERSATION, {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}]
    assert assemble(pieces, longer) == render(longer, True)
    assert go_template(pieces).count("{{ .Content }}") == (3 if system else 2)


def test_vllm_refuses_what_its_peft_helper_refuses():
    assert refusals({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}) == []
    found = refusals({"r": 1024, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": True,
                      "modules_to_save": ["lm_head"]})
    assert len(found) == 3 and "DoRA" in found[0]
    check_tensor_names(["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])
    from peftstudio.export.failure import ExportCheckFailed

    with pytest.raises(ExportCheckFailed):
        check_tensor_names(["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"])


def test_export_options_are_refused_before_anything_loads():
    assert check_options("gguf", None) == "f16" and check_options("merged", None) is None
    for fmt, quantize in (("onnx", None), ("merged", "q8_0"), ("gguf", "q3_k")):
        with pytest.raises(UserError):
            check_options(fmt, quantize)
