"""Write a merged Llama-architecture transformers model as one GGUF file with the `gguf`
library (llama.cpp's own reader and writer, published on PyPI).

The conversion follows llama.cpp's `convert_hf_to_gguf.py` for LlamaForCausalLM: the same
tensor names (gguf's TensorNameMap), the same row permutation of the query and key projections
(transformers rotates halves of each head, llama.cpp's Llama rope rotates adjacent pairs), the
byte-level BPE vocabulary as a `gpt2` tokenizer with its merges, special tokens and chat
template. 1-D tensors (norms) stay float32 as llama.cpp expects; f16 and q8_0 are written here
(gguf's Python quantizer), q4_k_m by llama.cpp's quantizer from the f16 file (export/gguf_check.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftstudio.errors import Problem, UserError

# Architectures this writer converts: transformers' class → the gguf architecture name.
SUPPORTED = {"LlamaForCausalLM": "llama"}


@dataclass(frozen=True)
class GgufWritten:
    path: Path
    tensors: int
    vocab_size: int
    file_type: str


def check_convertible(model_dir: Path) -> dict:
    """The model's config.json, or a user error when its architecture has no converter here."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or ["unknown"]
    if architectures[0] not in SUPPORTED:
        raise UserError(Problem("--format gguf", f"the base model is {architectures[0]}; peftstudio's GGUF writer "
                                                 f"converts {', '.join(SUPPORTED)} only",
                                "export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py, "
                                "or serve the adapter with --format vllm"))
    return config


def permute_rope_rows(weight, heads: int):
    """Reorder a q/k projection's rows from transformers' half-rotation layout to the
    interleaved pairs llama.cpp's Llama rope rotates (as convert_hf_to_gguf.py does)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(model_dir: Path, path: Path, file_type: str = "f16") -> GgufWritten:
    """Convert the transformers model in `model_dir` to `path` with weights in `file_type`
    (`f16` or `q8_0`)."""
    import gguf
    from safetensors.numpy import load_file

    config = check_convertible(model_dir)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    blocks = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_hparams(writer, config, model_dir.name, file_type)
    vocab_size = _write_vocab(writer, model_dir, config["vocab_size"])
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    written = 0
    for name, weight in tensors.items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if name.endswith("self_attn.q_proj.weight"):
            weight = permute_rope_rows(weight, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            weight = permute_rope_rows(weight, kv_heads)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(Problem(str(model_dir), f"tensor {name} has no GGUF name for the llama architecture",
                                    "export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py"))
        _add_tensor(writer, gguf_name, weight, file_type)
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufWritten(path, written, vocab_size, file_type)


def _write_hparams(writer, config: dict, name: str, file_type: str) -> None:
    import gguf

    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise UserError(Problem("--format gguf", f"rope scaling {rope.get('rope_type') or config.get('rope_scaling')} "
                                                 "is not converted by peftstudio's GGUF writer",
                                "export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py"))
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_vocab(writer, model_dir: Path, vocab_size: int) -> int:
    """The byte-level BPE vocabulary, padded to the embedding's rows as convert_hf_to_gguf.py
    pads it; special tokens are CONTROL, so llama.cpp never splits or prints them as text."""
    import gguf

    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tokenizer["model"]["type"] != "BPE":
        raise UserError(Problem(str(model_dir / "tokenizer.json"), f"a {tokenizer['model']['type']} tokenizer; "
                                "peftstudio's GGUF writer converts byte-level BPE only",
                                "convert the merged model with llama.cpp's convert_hf_to_gguf.py"))
    by_id = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    special = {added["id"]: added["content"] for added in tokenizer.get("added_tokens", []) if added.get("special")}
    by_id.update({added["id"]: added["content"] for added in tokenizer.get("added_tokens", [])})
    tokens, types = [], []
    for index in range(vocab_size):
        tokens.append(by_id.get(index, f"[PAD{index}]"))
        types.append(gguf.TokenType.CONTROL if index in special else
                     gguf.TokenType.NORMAL if index in by_id else gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    # "default": llama.cpp's GPT-2 split; the export check compares its tokenization with transformers'.
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_vocab = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special_vocab.add_to_gguf(writer, quiet=True)
    if "bos" not in special_vocab.add_special_token:
        # transformers adds no BOS unless the tokenizer says so (chat templates write it themselves);
        # llama.cpp's BPE default would add one.
        writer.add_add_bos_token(False)
    return vocab_size


def _add_tensor(writer, name: str, weight, file_type: str) -> None:
    import gguf
    import numpy as np

    weight = weight.astype(np.float32)
    if weight.ndim == 1:
        writer.add_tensor(name, weight)
    elif file_type == "q8_0" and weight.shape[-1] % 32 == 0:
        quantized = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, weight.astype(np.float16))
