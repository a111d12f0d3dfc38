"""One probe of find-batch-size: a real training step (forward, backward, optimizer step) on the
worst-case batch, with its peak memory measured.

On CUDA the peak is `torch.cuda.max_memory_allocated`. Elsewhere PyTorch keeps no peak
statistics, so `StorageTracker` counts every tensor storage created during the probe until
it is freed (a dispatch mode sees every operation, autograd's backward included), on top of
the weights, optimizer states and gradients alive when the probe starts.

Image-text data: the model loads with its vision tower (as training loads it) and the probe
sample is the row with the most images (the longest of those), its text extended to the
longest row's length when another row is longer: most images and longest text together, so
no real batch needs more. Its pixel tensors come from the training collator.

Objectives beyond SFT probe what their trainer runs per micro-batch (`ObjectiveStep`): DPO and
ORPO count pairs, so a micro-batch of B is 2B sequences of the longest pair (chosen and rejected
concatenated, both padded to the longer), plus for DPO a reference forward with the adapter
disabled (no grad); KTO runs B sequences with grad, a reference forward and the no-grad KL
forward on as many mismatched sequences; GRPO counts completions: B completions are generated
from the longest prompt to exactly grpo.max_completion_length tokens (KV cache included, with
gradient checkpointing off as TRL generates), then the reference forward (beta > 0) and the
training step on prompt + completion.
"""

from __future__ import annotations

import gc
import time
import weakref
from dataclasses import dataclass
from typing import Any

from peftstudio.config.schema import RunConfig
from peftstudio.data.tokenization import TokenizedData, TokenizedRow
from peftstudio.model.load import attach_adapter, load_base_model, match_vocabulary, model_location, quantization_config
from peftstudio.units import format_gib


class ProbeOutOfMemory(Exception):
    """A probe did not fit: the device ran out of memory, or the measured peak passed the budget."""

    def __init__(self, message: str, peak_bytes: int | None = None):
        super().__init__(message)
        self.peak_bytes = peak_bytes


@dataclass(frozen=True)
class Probe:
    micro_batch_size: int
    fits: bool
    peak_bytes: int | None
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"micro_batch_size": self.micro_batch_size, "result": "ok" if self.fits else "oom",
                "peak_bytes": self.peak_bytes, "seconds": round(self.seconds, 3), "detail": self.detail}


def release_memory() -> None:
    """Free what the last probe left behind before the next one (or before training)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def worst_case_ids(rows: list[TokenizedRow], max_seq_length: int, packing: bool) -> list[int]:
    """Token ids of the longest training sample (the rows are tokenized and limited to
    max_seq_length as training sees them); with packing, samples are concatenated, longest
    first, until a row of max_seq_length is full."""
    if packing:
        joined = [token for row in sorted(rows, key=lambda r: len(r.input_ids), reverse=True) for token in row.input_ids]
        return (joined * (max_seq_length // max(len(joined), 1) + 1))[:max_seq_length]
    return max((row.input_ids for row in rows), key=len)[:max_seq_length]


class StorageTracker:
    """Peak bytes of tensor storages created while active (a TorchDispatchMode), above a baseline."""

    def __init__(self, resident: dict[int, int]):
        """`resident`: data pointer → bytes of the storages alive before (weights, optimizer
        states); views of them (a weight's transpose in every matmul) are not new memory."""
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                output = func(*args, **(kwargs or {}))
                tracker._count(output)
                return output

        self.mode = _Mode()
        self.baseline = sum(resident.values())
        self.current = 0
        self.peak = 0
        self._seen: set[int] = set(resident)

    def _count(self, output) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        for leaf in tree_leaves(output):
            if not isinstance(leaf, torch.Tensor):
                continue
            storage = leaf.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or storage.nbytes() == 0:
                continue
            self._seen.add(key)
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._release, key, storage.nbytes())

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.current -= size

    @property
    def peak_bytes(self) -> int:
        return self.baseline + self.peak

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


class Prober:
    """A model with its adapter and optimizer, ready to run probe steps of any micro-batch."""

    def __init__(self, config: RunConfig, model, sample_ids: list[int], budget_bytes: int | None,
                 image_inputs: dict | None = None):
        """`image_inputs`: the collated extra tensors of the image-text sample (one row: pixel
        values, token_type_ids), repeated along the batch with the ids."""
        import torch

        self.config, self.model, self.budget = config, model, budget_bytes
        self.device = torch.device(config.device)
        self.sample = torch.tensor(sample_ids, dtype=torch.long)
        self.image_inputs = image_inputs or {}
        self.note = ""  # what the probe sample is, when not the plain longest row (image-text)
        self.pad_token_id = 0  # set by build_prober from the run's tokenizer (GRPO generation pads with it)
        self.optimizer = _optimizer(config, model)
        self._warm_optimizer_states()

    def release(self) -> None:
        """Drop the model, its optimizer states and the sample, so their memory can be freed."""
        self.model = self.optimizer = self.sample = None
        self.image_inputs = {}

    def _warm_optimizer_states(self) -> None:
        """Optimizer states exist from the first step of a real run on; make them exist now."""
        for parameter in self.trainable:
            parameter.grad = parameter.detach().new_zeros(parameter.shape)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def probe(self, micro_batch_size: int) -> Probe:
        """One training step at `micro_batch_size`; memory is released before returning."""
        start = time.perf_counter()
        try:
            peak = self._step(micro_batch_size)
            if self.budget is not None and peak > self.budget:
                raise ProbeOutOfMemory(f"measured peak {format_gib(peak, 3)} is over the budget of {format_gib(self.budget, 3)}",
                                       peak)
            return Probe(micro_batch_size, True, peak, time.perf_counter() - start)
        except ProbeOutOfMemory as error:
            return Probe(micro_batch_size, False, error.peak_bytes, time.perf_counter() - start, str(error))
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            release_memory()

    def _step(self, micro_batch_size: int) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            try:
                self._train_step(*self._batch(micro_batch_size))
            except torch.cuda.OutOfMemoryError as error:
                raise ProbeOutOfMemory(f"CUDA out of memory: {str(error).splitlines()[0]}") from None
            return torch.cuda.max_memory_allocated(self.device)
        with StorageTracker(self._resident_storages()) as tracker:
            self._train_step(*self._batch(micro_batch_size))
        return tracker.peak_bytes

    def _batch(self, micro_batch_size: int):
        """(ids, attention mask) of one micro-batch; GRPO's are generated here, inside the
        measurement, so the generation's KV cache counts toward the peak."""
        import torch

        if self.config.objective == "grpo":
            batch = self._generate(micro_batch_size)
        else:  # dpo / orpo count pairs: chosen and rejected of each, concatenated
            per_row = 2 if self.config.objective in ("dpo", "orpo") else 1
            batch = self.sample.unsqueeze(0).repeat(micro_batch_size * per_row, 1).to(self.device)
        # Real batches of several sequences are padded to the longest, which makes attention
        # build a mask (and sdpa repeat the kv heads): pad one position of every row but the first.
        mask = torch.ones_like(batch)
        mask[1:, -1] = 0
        return batch, mask

    def _train_step(self, batch, mask) -> None:
        import torch

        precision = self.config.training.precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        rows = batch.shape[0]
        extra = {key: value.repeat(rows, *[1] * (value.dim() - 1)).to(self.device) for key, value in self.image_inputs.items()}
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            self._no_grad_passes(batch, mask)
            loss = self.model(input_ids=batch, attention_mask=mask, labels=batch.masked_fill(mask == 0, -100), **extra).loss
        loss.backward()
        if self.config.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.optim.max_grad_norm)
        self.optimizer.step()

    def _no_grad_passes(self, batch, mask) -> None:
        """The forwards an objective runs without gradients before its loss: the reference (the
        adapter disabled) for dpo, kto and grpo with beta > 0, and KTO's KL batch."""
        import torch

        objective = self.config.objective
        reference = objective in ("dpo", "kto") or (objective == "grpo" and self.config.grpo.beta > 0)
        with torch.no_grad():
            if reference:
                with self.model.disable_adapter():
                    self.model(input_ids=batch, attention_mask=mask).logits.float().log_softmax(-1)
            if objective == "kto":
                self.model(input_ids=batch, attention_mask=mask).logits.float().log_softmax(-1)

    def _generate(self, completions: int):
        """GRPO: `completions` samples of exactly max_completion_length tokens from the longest prompt."""
        import torch
        from trl.models.utils import disable_gradient_checkpointing

        grpo = self.config.grpo
        prompts = self.sample.unsqueeze(0).repeat(completions, 1).to(self.device)
        kwargs = {"use_reentrant": False} if self.config.training.gradient_checkpointing == "on" else None
        with torch.no_grad(), disable_gradient_checkpointing(self.model, kwargs):
            return self.model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                       max_new_tokens=grpo.max_completion_length, min_new_tokens=grpo.max_completion_length,
                                       temperature=grpo.temperature, top_p=grpo.top_p, use_cache=True,
                                       pad_token_id=self.pad_token_id)

    def _resident_storages(self) -> dict[int, int]:
        """Weights, buffers, gradients and optimizer states alive before the step (pointer → bytes)."""
        import torch

        tensors = [*self.model.parameters(), *self.model.buffers()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        tensors += [v for state in self.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _optimizer(config: RunConfig, model):
    """The optimizer transformers' Trainer builds for `optim.name`, on the trainable parameters."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    optim = config.optim
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, optim=optim.name, learning_rate=optim.learning_rate,
                                 weight_decay=optim.weight_decay, adam_beta1=optim.betas[0], adam_beta2=optim.betas[1],
                                 adam_epsilon=optim.eps, use_cpu=config.device == "cpu", report_to=[])
        optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_class([p for p in model.parameters() if p.requires_grad], **kwargs)


def build_prober(config: RunConfig, tokens: TokenizedData, budget_bytes: int | None) -> tuple[Prober, int]:
    """Load the run's model with its adapter exactly as training does, and take the worst-case
    sample from the plan's tokenized training rows. Returns the prober and the probe sequence length."""
    location = model_location(config.model)
    training = config.training
    image_text = tokens.image_stats is not None
    quantization = quantization_config(config.peft)  # QLoRA probes the 4-bit model it trains
    if image_text:
        from peftstudio.model.vision import keep_vision_unquantized

        quantization = keep_vision_unquantized(quantization)
    model = load_base_model(location, config.model, training.precision, training.attention, quantization, config.device,
                            image_text=image_text)
    match_vocabulary(model, tokens.setup.tokenizer)  # a pad token the plan's tokenizer added
    # The adapter's initialisation (PiSSA's SVD, LoftQ) does not change its memory: skip it.
    peft = config.peft.model_copy(update={"init": "default"})
    if image_text:
        from peftstudio.model.vision import attach_image_text_adapter

        model = attach_image_text_adapter(model, peft, config.seed)
    else:
        model = attach_adapter(model, peft, config.seed)
    if quantization is None:  # a quantized model was placed on its device while loading
        model = model.to(config.device)
    if training.gradient_checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    if image_text:
        ids, image_inputs, note = worst_case_image_sample(tokens, config.data.image_grid)
        prober = Prober(config, model, ids, budget_bytes, image_inputs)
        prober.note = note
        return prober, len(ids)
    ids = worst_case_ids(tokens.train, training.max_seq_length, training.packing == "on")
    prober = Prober(config, model, ids, budget_bytes)
    prober.pad_token_id = tokens.setup.tokenizer.pad_token_id
    if config.objective == "grpo":  # the plan measured each prompt with a one-token stand-in answer: a few tokens over
        prober.note = (f"the longest prompt ({len(ids)} tokens with the template's answer header) and completions "
                       f"generated to grpo.max_completion_length={config.grpo.max_completion_length} tokens")
        return prober, len(ids) + config.grpo.max_completion_length
    if config.objective in ("dpo", "orpo"):
        prober.note = "the longest pair: chosen and rejected, both as long as its longer answer, 2 sequences per pair"
    return prober, len(ids)


def image_count(row) -> int:
    import json

    return len(json.loads(getattr(row, "images", "[]")))


def worst_case_image_sample(tokens: TokenizedData, image_grid: str | None) -> tuple[list[int], dict, str]:
    """(ids, collated image tensors of one row) of the image-text probe sample: the row with the
    most images (the longest of those), its text extended with the longest row's text tokens up
    to that row's length when it is longer (see the module doc)."""
    from peftstudio.train.vision_collator import ImageTextCollator, image_token_ids

    processor = tokens.setup.image_processor()
    most = max(tokens.train, key=lambda row: (image_count(row), len(row.input_ids)))
    longest = max(tokens.train, key=lambda row: len(row.input_ids))
    image_ids = set(image_token_ids(processor))
    filler = [t for t in longest.input_ids if t not in image_ids] or [tokens.setup.tokenizer.pad_token_id]
    extra = len(longest.input_ids) - len(most.input_ids)
    ids = list(most.input_ids) + (filler * (extra // len(filler) + 1))[:max(extra, 0)]
    collated = ImageTextCollator(processor, tokens.setup.tokenizer.pad_token_id, image_grid)(
        [{"input_ids": ids, "labels": ids, "image_refs": getattr(most, "images", "[]")}])
    note = (f"the training sample with the most images ({image_count(most)} image file(s), {len(most.input_ids)} tokens)"
            + (f", its text extended to the longest sample's {len(ids)} tokens" if extra > 0 else ""))
    return ids, {key: value for key, value in collated.items() if key not in ("input_ids", "attention_mask", "labels")}, note
