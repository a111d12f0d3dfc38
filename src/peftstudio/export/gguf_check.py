"""Check a written GGUF file before `export` says it is done.

Two checks. Always: read the file back with the gguf library and compare every tensor,
dequantized, with the merged model's weights (names, shapes, values within the precision's
rounding). Then, when llama-cpp-python is installed: load the file in llama.cpp, feed it the
prompt's token ids and take greedy tokens, compared with transformers' greedy tokens from the
merged model. For f16 they must be equal; a quantized file is reported (agreement k of n), since
rounding may flip a near tie.
"""

from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.errors import EnvironmentProblem, Problem
from peftstudio.export.failure import ExportCheckFailed

# Largest |GGUF - merged| per element accepted on read-back, relative to the tensor's largest
# magnitude: f16 rounds at 2^-11, q8_0 at 1/127 of each 32-block's maximum, q4_k_m far coarser.
READ_BACK_TOLERANCE = {"f16": 1e-3, "q8_0": 1e-2, "q4_k_m": 0.2}


@dataclass
class GgufCheck:
    file_type: str
    read_back: str
    runner: str | None = None
    prompt: str = ""
    transformers_tokens: list[int] = field(default_factory=list)
    gguf_tokens: list[int] = field(default_factory=list)
    tokenizer_agrees: bool | None = None
    max_logit_difference: float | None = None

    @property
    def agreement(self) -> int:
        return sum(a == b for a, b in zip(self.transformers_tokens, self.gguf_tokens))

    def to_dict(self) -> dict:
        return {"file_type": self.file_type, "read_back": self.read_back, "runner": self.runner,
                "prompt": self.prompt, "transformers_tokens": self.transformers_tokens,
                "gguf_tokens": self.gguf_tokens, "tokens_equal": self.transformers_tokens == self.gguf_tokens,
                "tokenizer_agrees": self.tokenizer_agrees, "max_logit_difference": self.max_logit_difference}


def llama_cpp_version() -> str | None:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def quantize_q4_k_m(source: Path, target: Path) -> None:
    """llama.cpp's own quantizer (k-quants have no Python writer): f16 GGUF → Q4_K_M. Tensors
    whose rows are not a multiple of 256 get llama.cpp's fallback type, as llama-quantize does."""
    if llama_cpp_version() is None:
        raise EnvironmentProblem([Problem("--quantize q4_k_m", "needs llama.cpp's quantizer, from llama-cpp-python",
                                          "pip install llama-cpp-python==0.3.36 (it compiles llama.cpp), "
                                          "or use --quantize q8_0 or f16")])
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    from llama_cpp._utils import suppress_stdout_stderr

    with suppress_stdout_stderr(disable=False):  # llama.cpp prints a line per tensor
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if failed:
        raise ExportCheckFailed(f"llama.cpp could not quantize {source} to Q4_K_M")


def read_back(path: Path, model_dir: Path, file_type: str) -> str:
    """Compare every tensor of the GGUF with the merged model's; a summary, or ExportCheckFailed."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from peftstudio.export.gguf_file import check_convertible, permute_rope_rows

    config = check_convertible(model_dir)
    source = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        source.update(load_file(file))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    by_gguf = {names.get_name(name, try_suffixes=(".weight", ".bias")): name for name in source}
    reader = gguf.GGUFReader(str(path))
    worst = 0.0
    for tensor in reader.tensors:
        name = by_gguf.get(tensor.name)
        if name is None:
            raise ExportCheckFailed(f"{path}: tensor {tensor.name} matches no weight of the merged model")
        expected = source[name].astype(np.float32)
        if name.endswith("q_proj.weight"):
            expected = permute_rope_rows(expected, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            expected = permute_rope_rows(expected, config.get("num_key_value_heads") or config["num_attention_heads"])
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(expected.shape)
        error = float(np.abs(values - expected).max() / max(float(np.abs(expected).max()), 1e-12))
        if error > READ_BACK_TOLERANCE[file_type]:
            raise ExportCheckFailed(f"{path}: {tensor.name} differs from {name} by {error:.3g} of its range")
        worst = max(worst, error)
    expected_count = len([n for n in source if not (n == "lm_head.weight" and config.get("tie_word_embeddings"))])
    if len(reader.tensors) != expected_count:
        raise ExportCheckFailed(f"{path}: {len(reader.tensors)} tensors, the merged model has {expected_count}")
    return f"{len(reader.tensors)} tensors read back, largest difference {worst:.2g} of a tensor's range"


def run_in_llama_cpp(path: Path, prompt_text: str, prompt_ids: list[int], new_tokens: int, one_by_one: bool = False):
    """(greedy token ids, logits after the prompt, llama.cpp's own tokenization of the text).
    `one_by_one` feeds the prompt a token per batch: llama-cpp-python 0.3.36 built here crashes
    (SIGSEGV) on multi-token batches of q8_0 / q4_k_m files with the tiny model's 128-wide rows."""
    import numpy as np
    from llama_cpp import Llama

    batch = 1 if one_by_one else 64
    # One thread: a check-sized model gains nothing from more, and llama.cpp's OpenMP workers
    # spin-wait, which on a busy 2-core machine made the same check take 20 s instead of 2.
    llm = Llama(model_path=str(path), n_ctx=len(prompt_ids) + new_tokens + 8, n_threads=1, n_threads_batch=1, n_batch=batch,
                n_ubatch=batch, verbose=False, seed=0, logits_all=True)  # scores are kept only then
    tokenized = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
    llm.eval(prompt_ids)
    first_logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    tokens, logits = [], first_logits
    for _ in range(new_tokens):
        token = int(np.argmax(logits))
        tokens.append(token)
        llm.eval([token])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    llm.close()
    return tokens, first_logits, tokenized


def transformers_greedy(model_dir: Path, prompt_ids: list[int], new_tokens: int):
    """(greedy token ids, logits after the prompt) of the merged model in float32; generation
    runs past end-of-turn so both runtimes are compared on the same number of tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    ids = torch.tensor([prompt_ids])
    tokens = []
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
        first = logits.numpy().copy()
        for _ in range(new_tokens):
            token = int(torch.argmax(logits))
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            logits = model(input_ids=ids).logits[0, -1]
    return tokens, first


def check_gguf(path: Path, model_dir: Path, file_type: str, prompt_text: str, prompt_ids: list[int],
               new_tokens: int = 16) -> GgufCheck:
    """Read the file back; run it in llama.cpp where installed. ExportCheckFailed when f16's
    greedy tokens differ from transformers'."""
    import numpy as np

    check = GgufCheck(file_type, read_back(path, model_dir, file_type), prompt=prompt_text)
    version = llama_cpp_version()
    if version is None:
        return check
    check.runner = f"llama-cpp-python {version}"
    check.transformers_tokens, reference_logits = transformers_greedy(model_dir, prompt_ids, new_tokens)
    check.gguf_tokens, logits, tokenized = run_in_llama_cpp(path, prompt_text, prompt_ids, new_tokens,
                                                            one_by_one=file_type != "f16")
    check.tokenizer_agrees = list(tokenized) == list(prompt_ids)
    check.max_logit_difference = float(np.abs(logits - reference_logits).max())
    if file_type == "f16" and check.gguf_tokens != check.transformers_tokens:
        raise ExportCheckFailed(f"{path}: llama.cpp's greedy tokens {check.gguf_tokens} differ from transformers' "
                                f"{check.transformers_tokens} (f16 must match)")
    return check
