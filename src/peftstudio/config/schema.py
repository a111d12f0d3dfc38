"""The one typed schema of a peftstudio run.

Every key a user can set lives here, with its type, range and default. The attribute
docstrings are the documentation: `explain`, CLI help and generated YAML comments read them,
so they are written for users. Unknown keys are errors (`extra="forbid"`).

`auto` is a value, not a hidden default: `plan.resolve` replaces every `auto` with a
concrete value and a reason.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from peftstudio.config.eval_schema import EvalSettings
from peftstudio.config.objective_schema import DpoSettings, GrpoSettings, KtoSettings, Objective, OrpoSettings

EMBEDDED_MODEL_ID = "embedded:tiny-llama"
EMBEDDED_SAMPLE_DATA = "embedded:sample"
EMBEDDED_JSON_SAMPLE_DATA = "embedded:sample-json"


# Other spellings of keys, as the seeds' training reference writes them: accepted in files and
# overrides, and named where the value shows up (`plan`: "model.lora_rank is peft.r"), never a
# second key beside the first. A trailing dot maps a whole section (optimizer.X is optim.X).
ALIASES = {"training.seed": "seed", "training.device": "device", "checkpoint_dir": "training.checkpoint_dir",
           "model.lora_rank": "peft.r", "model.lora_alpha": "peft.alpha", "model.lora_dropout": "peft.dropout",
           "optimizer.": "optim.", "optimizer.lr": "optim.learning_rate"}


def canonical_key(dotted: str) -> str | None:
    """The schema's key an alias stands for, or None when `dotted` is no alias."""
    if dotted in ALIASES:
        return ALIASES[dotted]
    for alias, target in ALIASES.items():
        if alias.endswith(".") and dotted.startswith(alias):
            return canonical_key(target + dotted[len(alias):]) or target + dotted[len(alias):]
    return None


def memory(note: str) -> dict:
    """Attach a memory-impact note to a field; `explain` shows it."""
    return {"memory": note}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class VisionTower(Section):
    """The vision encoder and projector of an image-text model, enough to plan it offline."""

    num_layers: int = Field(ge=1)
    """Encoder blocks of the vision tower."""
    hidden_size: int = Field(ge=1)
    """Vision tower width."""
    intermediate_size: int = Field(ge=1)
    """Vision tower MLP width."""
    num_heads: int = Field(ge=1)
    """Vision tower attention heads."""
    patch_size: int = Field(ge=1)
    """Pixels per patch side."""
    image_size: int = Field(ge=1)
    """Side of the square image the tower reads (Gemma 3: 896); for Qwen2.5-VL the default
    resolution the token count is estimated at."""
    tokens_per_image: int = Field(ge=1)
    """Image tokens one image becomes in the text sequence (Gemma 3: 256 fixed; Qwen2.5-VL:
    (side / 28)^2 at the image's resolution, between min and max pixels)."""
    extra_tokens_per_image: int = Field(default=0, ge=0)
    """Text tokens wrapped around each image (Gemma 3: two newlines, begin and end of image)."""
    projector_parameters: int = Field(default=0, ge=0)
    """Parameters of the projector from the vision width to the text width."""
    parameters: int = Field(default=0, ge=0)
    """All parameters of the vision tower (0: counted from the numbers above)."""


class ModelArchitecture(Section):
    """Architecture numbers of a model, enough to plan it without downloading weights."""

    model_type: str = "llama"
    """Architecture family as in the model's config.json (llama, mistral, mixtral, qwen2, qwen3,
    gemma2, gemma3_text, phi3, falcon): decides the block's module names, norms and biases when
    counting parameters and resolving LoRA targets."""
    num_layers: int = Field(ge=1)
    """Number of transformer blocks."""
    hidden_size: int = Field(ge=1)
    """Width of the residual stream."""
    num_heads: int = Field(ge=1)
    """Attention (query) heads."""
    num_kv_heads: int = Field(ge=1)
    """Key/value heads (fewer than num_heads means grouped-query attention)."""
    head_dim: int | None = Field(default=None, ge=1)
    """Per-head width; null means hidden_size / num_heads."""
    intermediate_size: int = Field(ge=1)
    """Width of the gated MLP."""
    vocab_size: int = Field(ge=1)
    """Tokenizer vocabulary size (rows of the embedding matrix)."""
    tie_embeddings: bool = False
    """Whether the output head shares the input embedding matrix."""
    attention_bias: bool = False
    """Whether q/k/v projections carry a bias (Qwen2 does; for Falcon: every linear layer)."""
    max_position_embeddings: int = Field(default=4096, ge=1)
    """Longest context the model was trained for."""
    num_experts: int = Field(default=0, ge=0)
    """Experts per mixture-of-experts block (Mixtral: 8); 0 for a dense MLP."""
    num_experts_per_token: int = Field(default=0, ge=0)
    """Experts each token is routed to (Mixtral: 2); 0 for a dense MLP."""
    vision: VisionTower | None = None
    """The vision tower and projector of an image-text model (Gemma 3 4B+, Qwen2.5-VL); null
    for a text-only model."""
    norms_per_block: int | None = Field(default=None, ge=0)
    """Layer norms per block when the family allows several layouts (Falcon-7B: 1, Falcon-40B: 2);
    null means the family's usual."""


class ModelSettings(Section):
    name_or_path: str = EMBEDDED_MODEL_ID
    """Hub id (org/name), a local model directory, or `embedded:tiny-llama` for the small model
    peftstudio builds itself (no download)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to load; null means the default branch."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust the repository."""
    architecture: ModelArchitecture | None = None
    """Architecture numbers used for planning before any download (presets carry them)."""


PeftMethod = Literal["lora", "dora", "rslora", "pissa", "qlora", "qdora"]
_INIT_PATTERN = re.compile(r"^(default|gaussian|olora|loftq|pissa|pissa_niter_\d+)$")
# Methods whose base model is loaded quantized by bitsandbytes.
QUANTIZED_METHODS = ("qlora", "qdora")


class PeftSettings(Section):
    method: PeftMethod = "lora"
    """Adapter method: lora, dora (weight-decomposed), rslora (rank-stabilised scaling), pissa
    (adapter initialised from the principal singular vectors), qlora (LoRA on a 4-bit NF4 base)
    or qdora (DoRA on a 4-bit NF4 base)."""
    r: int = Field(default=16, ge=1, le=256, json_schema_extra=memory("LoRA weights, their gradients and optimizer states grow linearly with r; small next to the base model"))
    """LoRA rank. 8-16 for style and format, 32-64 for new knowledge or skills."""
    alpha: float = Field(default=32.0, gt=0, le=4096)
    """LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA). Usually r to 2×r."""
    dropout: float = Field(default=0.05, ge=0.0, le=0.5)
    """Dropout on the LoRA input. 0.05-0.1 on small datasets; 0 for speed."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Modules that get adapters: `all-linear`, or a list of names such as [q_proj, v_proj]."""
    target_scope: Literal["language", "vision", "all"] = "language"
    """Image-text models: which part's layers get adapters: the language model (default), the
    vision tower, or both. The projector and everything else stay frozen. Ignored for text-only runs."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train along with the adapter."""
    use_rslora: bool = False
    """Scale by alpha / sqrt(r) (rank-stabilised LoRA), so higher ranks keep learning."""
    use_dora: bool = False
    """Weight-decomposed LoRA: learns magnitude and direction separately. Slower per step."""
    init: str = "default"
    """Adapter initialisation: default, gaussian, olora (orthonormal, from a QR of the weight),
    loftq (with peft=qlora: starts as the low-rank part of the 4-bit quantization error), pissa or pissa_niter_N (fast SVD
    with N iterations). olora and pissa adapters are converted on save to apply to the original base."""
    init_adapter: str | None = None
    """Start from an existing LoRA adapter instead of a fresh one: a run dir (an earlier run's
    training.output_dir) or an adapter dir, e.g. the SFT run before DPO or GRPO. Its r, alpha
    and flags must match peft's; its target modules are used. With dpo / kto / grpo the
    reference model is then that starting adapter (a frozen copy), not the bare base. null: a
    fresh adapter."""
    quantization: Literal["none", "nf4", "fp4", "int8"] = "none"
    """How bitsandbytes stores the frozen base weights: none (full precision), nf4 or fp4
    (4-bit, QLoRA) or int8 (8-bit). qlora and qdora use nf4."""
    double_quant: bool = False
    """Quantize the 4-bit quantization constants too (saves ~0.4 bit per parameter)."""
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Dtype the 4-bit weights are dequantized to for each matmul. auto follows training.precision."""

    @field_validator("init")
    @classmethod
    def _known_init(cls, value: str) -> str:
        if not _INIT_PATTERN.match(value):
            raise ValueError("must be default, gaussian, olora, loftq, pissa or pissa_niter_N (N an integer)")
        return value


Switch = Literal["auto", "on", "off"]


class TrainingSettings(Section):
    @field_validator("micro_batch_size", mode="before")
    @classmethod
    def _micro_batch_or_auto(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValueError("must be an integer from 1 to 1024, or auto")
        return value

    @field_validator("cpu_threads", mode="before")
    @classmethod
    def _thread_count(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024):
            return value
        raise ValueError("must be an integer from 1 to 1024, or auto")

    @field_validator("packing", "gradient_checkpointing", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads a bare `on` / `off` as a boolean; accept it as the switch it meant.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    micro_batch_size: int | Literal["auto"] = Field(default=4, json_schema_extra=dict(allowed="1–1024, or auto", **memory("activations grow linearly with it; the largest single lever on peak memory after the weights")))
    """Sequences per device per forward pass. Guidance: 1-2 on 8-16 GB GPUs for 7B models,
    4-8 on 24-80 GB. Keep the effective batch with gradient_accumulation_steps. auto: the
    largest that the memory estimate says fits; `train` then confirms it with real probes
    (find-batch-size) and raises gradient_accumulation_steps if a smaller one is needed."""
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    """Micro-batches summed before each optimizer step. Effective batch = micro_batch_size ×
    gradient_accumulation_steps × processes."""
    num_batches: int = Field(default=3738, ge=1, le=100_000_000)
    """Length of the run in optimizer steps (the data repeats as needed)."""
    num_epochs: int = Field(default=1, ge=1, le=10)
    """Passes over the training data. Used only when set more explicitly than num_batches
    (e.g. on the command line while num_batches comes from a group file): then the run is epoch-based."""
    max_seq_length: int = Field(default=1024, ge=16, le=131072, json_schema_extra=memory("activations and logits grow linearly with it (attention scores quadratically with eager attention)"))
    """Longest tokenized sample; longer ones are truncated."""
    packing: Switch = "auto"
    """Pack several samples into one sequence to avoid padding. auto decides from the data."""
    gradient_checkpointing: Switch = "auto"
    """Recompute activations in the backward pass: ~30% slower, far less activation memory."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute precision. auto: bf16 on GPUs that have it, fp16 with loss scaling otherwise, fp32 on CPU."""
    attention: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    """Attention implementation. auto: flash_attention_2 when installed on a supporting GPU, else sdpa."""
    loss_impl: Literal["auto", "plain", "chunked"] = Field(default="auto", json_schema_extra=memory("plain holds the whole batch's logits and their fp32 copies (micro-batch × sequence × vocabulary); chunked holds one tile of 4096 tokens"))
    """How the loss is computed from the last hidden states. plain: the full logits, then
    cross-entropy (transformers). chunked: TRL's fused LM head, which projects and scores 4096
    tokens × 32768 vocabulary entries at a time and recomputes them in backward (Triton on CUDA,
    PyTorch tiles elsewhere), never holding the full logits. auto: chunked where the full
    logits would be a large share of memory, plain where they are small (see plan)."""
    cpu_threads: int | Literal["auto"] = Field(default="auto", json_schema_extra=dict(allowed="1–1024, or auto"))
    """Intra-op threads of a CPU run (torch.set_num_threads). auto: the probe block
    (plan/hardware.py) at the model's width and precision, timed once on this machine with one
    thread and with every core, back to back (cached with the precision probe, so every run here
    takes the same count and stays bit-for-bit repeatable; delete the cached file to measure
    again), and the faster taken: on a CPU shared with other work, threads that wait for each
    other at every operation can make more threads slower. GPU runs: torch's default."""
    loss_on: Literal["completion", "all"] = "completion"
    """Train on the answer tokens only (completion) or on the whole sequence (all)."""
    checkpoint_dir: str = "./checkpoints/ckpts/"
    """Where checkpoints go (created if missing, ~ expanded)."""
    save_interval_steps: int = Field(default=100, ge=1)
    """Write a checkpoint every this many optimizer steps (and at the end)."""
    save_total_limit: int = Field(default=3, ge=1, le=1000)
    """Keep at most this many checkpoints; older ones are deleted after a new one is complete."""
    eval_interval_steps: int = Field(default=500, ge=1)
    """Evaluate on the validation split every this many optimizer steps (and at the end)."""
    evals_per_epoch: int | None = Field(default=None, ge=1, le=1000)
    """Evaluate this many times per pass over the data: sets eval_interval_steps from the
    steps per epoch `plan` computes (it says so). null: eval_interval_steps decides."""
    saves_per_epoch: int | None = Field(default=None, ge=1, le=1000)
    """Write this many checkpoints per pass over the data: sets save_interval_steps from the
    steps per epoch (`plan` says so). null: save_interval_steps decides."""
    log_interval_steps: int = Field(default=10, ge=1)
    """Write a metrics line every this many optimizer steps."""
    output_dir: str = "./outputs"
    """Run directory: resolved config, plan, metrics, adapter and plots."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint of the same run; never: start fresh
    (deletes the checkpoints already in checkpoint_dir); or the path of a checkpoint."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop after this many evaluations without improvement; null turns it off."""
    early_stopping_threshold: float = Field(default=0.0, ge=0.0)
    """Smallest improvement of the watched metric that counts as one."""
    metric_for_best_model: str | None = None
    """Metric that decides the best checkpoint (kept beyond save_total_limit), e.g. eval_loss."""
    nan_patience: int | None = Field(default=3, ge=1)
    """Stop the run when the logged loss is NaN or infinite this many logs in a row, and write
    RUN_DIR/diagnosis.json with the overrides to try; null turns the watchdog off."""
    distributed: Literal["none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = "none"
    """Multi-process strategy. none: one process. ddp: a full replica per process, gradients
    averaged (CPU over gloo, or one process per GPU). fsdp / deepspeed_zero2 / deepspeed_zero3:
    shard optimizer states (and with fsdp / zero3 the weights) across GPUs. `train` starts the
    processes itself through `accelerate launch` with a config peftstudio writes."""
    num_processes: int = Field(default=1, ge=1, le=4096)
    """Processes in total across all machines (one per GPU; on CPU, at most one per core).
    Effective batch = micro_batch_size × gradient_accumulation_steps × num_processes."""
    num_machines: int = Field(default=1, ge=1, le=512)
    """Machines taking part; num_processes is split evenly across them. Start `train` on each."""
    machine_rank: int = Field(default=0, ge=0, le=511)
    """This machine's index, 0 to num_machines-1; machine 0 hosts the rendezvous."""
    main_process_ip: str | None = None
    """Address of machine 0 that the others reach; needed when num_machines > 1."""
    main_process_port: int | None = Field(default=None, ge=1024, le=65535)
    """Rendezvous port on machine 0. null: a free port when on one machine, 29500 across machines."""
    process_timeout_s: int = Field(default=600, ge=10, le=86400)
    """Seconds a process of a multi-process run waits for the others at a collective (all-reduce,
    barrier, gather; gloo and NCCL alike) before it stops with an error: how long a lost process
    or machine can stall the rest. Raise it when one process works alone for longer (rank 0
    tokenizing a large dataset, or writing a large checkpoint to slow storage)."""


class OptimSettings(Section):
    name: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                  "adafactor", "sgd"] = "adamw_torch"
    """Optimizer. adamw_torch keeps two fp32 states per trainable parameter; adamw_8bit and
    paged_adamw_8bit (bitsandbytes) keep them in 8 bits; paged_* can spill states to CPU RAM
    under GPU memory pressure."""
    learning_rate: float = Field(default=2e-4, ge=1e-6, le=1e-2)
    """Peak learning rate. LoRA usually wants 1e-4 to 3e-4; tiny models tolerate more."""
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    """Decoupled weight decay on the adapter weights."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam beta1 and beta2."""
    eps: float = Field(default=1e-8, gt=0.0, le=1e-3)
    """Adam epsilon."""
    max_grad_norm: float = Field(default=1.0, ge=0.0)
    """Clip the gradient norm to this value; 0 turns clipping off."""
    lr_scheduler: Literal["cosine", "linear", "constant", "polynomial"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5)
    """Share of the run spent warming up the learning rate (ignored when warmup_steps is set)."""
    warmup_steps: int | None = Field(default=None, ge=0)
    """Warmup length in optimizer steps; overrides warmup_ratio."""


# preference, kto and prompt are the data of objective=dpo|orpo, kto and grpo (data/objective_data.py).
DataFormat = Literal["auto", "instruction", "chat", "sharegpt", "prompt_completion", "text", "preference", "kto", "prompt"]


class DataSource(Section):
    """One more dataset trained on together with data.path (each with its own format and columns)."""

    path: str
    """A local file, a save_to_disk directory or a hub dataset id, as data.path."""
    format: DataFormat = "auto"
    """Record shape of this dataset, as data.format."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Rename this dataset's columns to the format's names, as data.columns."""
    split: str = "train"
    """Split to read from a hub dataset or a save_to_disk DatasetDict."""
    subset: str | None = None
    """Hub dataset configuration (subset) name."""
    revision: str | None = None
    """Hub dataset revision; null means the default branch."""


class DataSettings(Section):
    path: str = EMBEDDED_SAMPLE_DATA
    """A local .jsonl / .json (array) / .csv / .tsv / .parquet file, a directory written by
    datasets' save_to_disk, a hub dataset id (org/name), `embedded:sample` for the bundled
    instruction data (with objective=dpo|kto|grpo: the sample of that objective's shape),
    `embedded:sample-json` for the same tasks answered as JSON objects {"answer": ..., "task": ...}
    (exactly checkable: eval.metrics), or `embedded:word-prompts` for GRPO prompts of the three
    tasks whose answer is in the prompt's own words (reverse, first letter, capitals)."""
    format: DataFormat = "auto"
    """Record shape: instruction (alpaca: instruction/input/output), chat (messages with
    role/content), sharegpt (conversations with from/value), prompt_completion, text; for the
    other objectives preference (prompt/chosen/rejected: dpo, orpo), kto (prompt/completion/label)
    or prompt (prompt plus the columns the rewards read: grpo); or auto (detected from the first
    record's columns; `plan` says which)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Rename your columns to the format's names, e.g. {prompt: question, completion: answer}."""
    validation_split: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of rows held out for evaluation; 0 turns evaluation off. Ignored when
    validation_path is set."""
    validation_path: str | None = None
    """A separate file (same format) to evaluate on, instead of splitting data.path."""
    max_samples: int | None = Field(default=None, ge=1)
    """Use only the first N rows (after shuffling)."""
    shuffle_seed: int = 42
    """Seed of the shuffle before the split."""
    overlong: Literal["truncate", "drop", "error"] = "truncate"
    """Samples longer than training.max_seq_length: truncate (keep the start), drop them, or
    stop with an error listing them. `plan` counts them either way."""
    chat_template: str | None = None
    """Chat template for conversational data: null uses the tokenizer's own; or a known name
    (chatml, llama3, qwen2_5, gemma, phi3, ...), a Jinja string, or a .jinja file path. A
    template whose control tokens (<|im_start|>, ...) are not single tokens of the model's
    tokenizer is refused unless data.add_special_tokens=true."""
    add_special_tokens: bool = False
    """Add the control tokens of data.chat_template that the tokenizer lacks, as new
    vocabulary entries; their embedding rows are then trained and saved with the adapter
    (`plan` says how large). Off: such a template is refused."""
    train_on_turns: Literal["all", "last"] = "all"
    """Which assistant turns of a conversation the loss trains on (each with its end-of-turn
    token): all of them, or only the last."""
    system_message: Literal["keep", "merge", "drop"] = "keep"
    """System turns: keep them, merge their text into the first user turn, or drop them
    (for templates without a system role, e.g. Gemma 2)."""
    split: str = "train"
    """Split to read from a hub dataset or a save_to_disk DatasetDict."""
    subset: str | None = None
    """Hub dataset configuration (subset) name, when the dataset has several."""
    revision: str | None = None
    """Hub dataset revision (branch, tag or commit); null means the default branch."""
    modality: Literal["auto", "text", "image-text"] = "auto"
    """What the training rows hold: auto reads it from the data (image-text when any record has
    images; `plan` says which). The memory estimate counts pixel tensors and the vision forward
    for image-text only: an image-text model trained on text loads its tower but never runs it.
    Set text or image-text to have `plan` refuse data that is not that."""
    image_grid: str | None = Field(default=None, pattern=r"^[1-9]x[1-9]$")
    """Compose each record's images into one ROWSxCOLUMNS grid image (e.g. 2x2: four
    consecutive frames, row-major, each tile the first image's size); null keeps the images
    separate. Only for image-text data."""
    datasets: list[DataSource] = Field(default_factory=list)
    """Further datasets trained on together with data.path: each read and checked in its own
    format and columns, then all rows concatenated before the shuffle and split, e.g.
    [{path: more.jsonl, format: chat}]. Conversational and prompt/completion sources mix
    (prompt/completion rows become two-turn conversations); text sources mix only with text."""


class LoggingSettings(Section):
    tensorboard: bool = False
    """Also write TensorBoard event files to RUN_DIR/tensorboard (metrics.jsonl is always written)."""
    wandb: bool = False
    """Also log to Weights & Biases: offline into RUN_DIR/wandb unless WANDB_API_KEY is set
    (then online, unless WANDB_MODE=offline)."""
    wandb_project: str = "peftstudio"
    """W&B project the run is logged under."""
    mlflow: bool = False
    """Also log to MLflow: a local file store in RUN_DIR/mlruns unless mlflow_tracking_uri or
    MLFLOW_TRACKING_URI names a server."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking server or store URI; null means RUN_DIR/mlruns (or MLFLOW_TRACKING_URI when set)."""
    mlflow_experiment: str = "peftstudio"
    """MLflow experiment name."""
    comet: bool = False
    """Also log to Comet ML: offline into RUN_DIR/comet (upload later with `comet upload`) unless
    COMET_API_KEY is set."""
    phoenix: bool = False
    """Also send evaluations (scores, and the generations with their scores where the run
    generates) to Arize Phoenix as OpenTelemetry traces, at phoenix_endpoint."""
    phoenix_endpoint: str = "http://127.0.0.1:6006/v1/traces"
    """OTLP/HTTP traces endpoint of the Phoenix collector (a local `phoenix serve` by default)."""
    trackio: bool = False
    """Also log to Trackio, locally: a SQLite store in trackio_dir (`TRACKIO_DIR=DIR trackio show`
    opens it); TRACKIO_SPACE_ID or TRACKIO_SERVER_URL, when set, send the run there instead."""
    trackio_dir: str | None = None
    """Trackio's local store (one SQLite file per project; several runs may share it); null means
    TRACKIO_DIR when set, else RUN_DIR/trackio (never the home directory unasked)."""
    project: str | None = None
    """Project every tracker logs under (W&B project, MLflow experiment, Comet, Phoenix and
    Trackio project); null keeps wandb_project / mlflow_experiment, and `peftstudio` elsewhere."""
    run_name: str | None = None
    """The run's name in every tracker; null means METHOD-FINGERPRINT (e.g. lora-1a2b3c4d)."""
    tags: list[str] = Field(default_factory=list)
    """Tags every tracker attaches to the run."""
    notes: str | None = None
    """A free-text note every tracker keeps with the run."""
    watch: Literal["off", "gradients", "all"] = "off"
    """Histograms of the trainable (adapter) weights' gradients (`gradients`) or gradients and
    values (`all`) at every logged step, to RUN_DIR/histograms.jsonl and each tracker that
    draws histograms (TensorBoard, W&B, Comet), like wandb.watch."""
    on_error: Literal["fail", "warn"] = "fail"
    """What an unreachable tracker (MLflow server, W&B online) does when the run is planned: fail
    stops it (exit 3, with the fix); warn goes on with metrics.jsonl alone and says so. A tracker
    that fails during training never stops it: it is dropped with a warning."""


class RunConfig(Section):
    """A whole run: what `plan` checks and `train` executes."""

    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    """Seed for weights init, dropout and data order; same seed, same data, same machine → same run."""
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    """Where to train. auto picks CUDA, then MPS, then CPU."""
    platform: str = "auto"
    """Platform preset the run was composed with (set by `platform=NAME`)."""
    experiment: str | None = None
    """Experiment preset applied on top (set by `+experiment=NAME`)."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    """The base model."""
    peft: PeftSettings = Field(default_factory=PeftSettings)
    """The adapter method and its parameters."""
    data: DataSettings = Field(default_factory=DataSettings)
    """The training data."""
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    """Run length, batch, checkpoints, logging, precision."""
    optim: OptimSettings = Field(default_factory=OptimSettings)
    """Optimizer and learning-rate schedule."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    """Metric sinks beyond metrics.jsonl."""
    eval: EvalSettings = Field(default_factory=EvalSettings)
    """Generation-based evaluation: task metrics of generated answers at every evaluation."""
    objective: Objective = "sft"
    """What the adapter is trained for (set by `objective=NAME`): sft (supervised: learn the
    answers), dpo (prefer chosen over rejected answers), orpo (SFT plus an odds-ratio
    preference term, no reference), kto (unpaired good/bad completions), grpo (reinforcement
    from reward functions on sampled completions)."""
    dpo: DpoSettings = Field(default_factory=DpoSettings)
    """DPO settings (used with objective=dpo)."""
    orpo: OrpoSettings = Field(default_factory=OrpoSettings)
    """ORPO settings (used with objective=orpo)."""
    kto: KtoSettings = Field(default_factory=KtoSettings)
    """KTO settings (used with objective=kto)."""
    grpo: GrpoSettings = Field(default_factory=GrpoSettings)
    """GRPO settings (used with objective=grpo)."""
