"""Every environment variable peftstudio honours, read (or set for a library) in this one module.

Production code asks this module, never `os.environ`, so the full list of what changes
peftstudio's behaviour from outside lives here, and the README's table is rendered from it
(`environment_table()`). Test hooks are not environment variables: fault injection, memory
budgets and a process's place reach the code as arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# name → what it does; the README's "Environment variables" table is this list.
HONOURED = {
    "PEFTSTUDIO_CACHE": "where the embedded model is built and cached (default `~/.cache/peftstudio`)",
    "PEFTSTUDIO_STUDIO_TOKEN": "the default of `studio --token`: the token every page and API call must carry",
    "RANK": "set by torchrun / accelerate launch: this process's rank in a multi-process run (default 0)",
    "WORLD_SIZE": "set by torchrun / accelerate launch: the processes of the run (default 1); a plan "
                  "whose `training.num_processes` differs is refused",
    "LOCAL_RANK": "set by torchrun / accelerate launch: this process is a worker (it trains, never launches); "
                  "a quantized model loads onto this GPU of its machine",
    "HF_TOKEN": "Hugging Face token for gated or private models and datasets (read by huggingface_hub); "
                "`doctor` says whether it is set, `launch` passes it to the SkyPilot task as a secret",
    "HUGGING_FACE_HUB_TOKEN": "the older name of `HF_TOKEN`; `doctor` counts either",
    "HUGGINGFACE_TOKEN": "the name tutorials' `.env` files use for `HF_TOKEN`: copied to `HF_TOKEN` when that is not set",
    "HF_HOME": "huggingface_hub's cache, where `huggingface-cli login` keeps the token `doctor` looks for",
    "XDG_CACHE_HOME": "the parent of `HF_HOME` when that is not set (default `~/.cache`)",
    "HF_HUB_OFFLINE": "`1`: never reach the hub (read by huggingface_hub and transformers)",
    "WANDB_API_KEY": "`logging.wandb` logs online when set, offline otherwise; `doctor` says whether it is set",
    "WANDB_MODE": "`logging.wandb`'s mode (e.g. online, offline, disabled) when set, whatever `WANDB_API_KEY` says",
    "MLFLOW_TRACKING_URI": "`logging.mlflow`'s server or store when `logging.mlflow_tracking_uri` is null "
                           "(else `RUN_DIR/mlruns`)",
    "MLFLOW_TRACKING_TOKEN": "bearer token for an MLflow server (read by mlflow, and by the plan-time check)",
    "MLFLOW_TRACKING_USERNAME": "basic-auth user for an MLflow server (read by mlflow, and by the plan-time check)",
    "MLFLOW_TRACKING_PASSWORD": "basic-auth password for an MLflow server (read by mlflow, and by the plan-time check)",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "set to `2` for a run's MLflow client unless already set (mlflow's own default "
                                       "retries for minutes)",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "set to `10` (seconds) for a run's MLflow client unless already set",
    "COMET_API_KEY": "`logging.comet` logs online when set, offline into `RUN_DIR/comet` otherwise; `doctor` says "
                     "whether it is set",
    "COMET_ERROR_TRACKING_ENABLE": "set to `false` for a run logging to Comet, unless already set (comet_ml otherwise "
                                   "reports its own errors, with details of the machine, to Comet's Sentry)",
    "TRACKIO_DIR": "`logging.trackio`'s local store when `logging.trackio_dir` is null (else `RUN_DIR/trackio`)",
    "TRACKIO_SPACE_ID": "read by trackio: `logging.trackio` sends the run to this Hugging Face Space instead of the "
                        "local store; `plan` says so",
    "TRACKIO_SERVER_URL": "read by trackio: `logging.trackio` sends the run to this self-hosted Trackio server "
                          "(with `TRACKIO_WRITE_TOKEN`) instead of the local store; `plan` says so",
    "WANDB_BASE_URL": "the W&B server an online run logs to (default https://api.wandb.ai); checked at plan time",
    "MLFLOW_ALLOW_FILE_STORE": "set to `true` for a run logging to a file store, unless already set "
                               "(MLflow 3 keeps its file store behind this opt-in)",
    "TOKENIZERS_PARALLELISM": "set to `false` by the CLI unless already set (the tokenizers library warns "
                              "about forked processes otherwise)",
}


# Names some guides use, and the variable the libraries read.
ALIASES = {"HUGGINGFACE_TOKEN": "HF_TOKEN"}


@dataclass(frozen=True)
class DotenvOrigin:
    """What this process took from a .env file: the file, and the names it set (never values)."""

    path: Path | None = None
    names: tuple[str, ...] = ()
    shadowed: tuple[str, ...] = ()  # in the file, but the shell had set them first: the shell's value holds
    skipped: str | None = None  # why no file was read: "--no-env-file", "no ./.env"


_dotenv_origin = DotenvOrigin(skipped="not loaded")


def load_dotenv(directory: Path | None = None, file: Path | None = None) -> dict[str, str]:
    """Set the variables of `file` (default `DIRECTORY/.env`, DIRECTORY the working directory)
    that the environment does not set already (the shell wins), then the aliases
    (`HUGGINGFACE_TOKEN` → `HF_TOKEN`). The libraries (huggingface_hub, wandb, mlflow) read
    os.environ themselves, so the values go there. Returns the variables set (name → value),
    for redaction; `dotenv_origin()` keeps their names for `doctor`."""
    from dotenv import dotenv_values

    global _dotenv_origin
    path = file if file is not None else (directory or Path.cwd()) / ".env"
    values = {name: value for name, value in dotenv_values(path).items() if value is not None} if path.is_file() else {}
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    for alias, name in ALIASES.items():
        if alias in os.environ and name not in os.environ:
            os.environ[name] = added[name] = os.environ[alias]
    _dotenv_origin = DotenvOrigin(path.resolve(), tuple(added), tuple(n for n in values if n not in added)) if path.is_file() else DotenvOrigin(skipped=f"no {path}")
    return added


def skip_dotenv() -> None:
    """Record that `--no-env-file` turned .env loading off, so `doctor` can say so."""
    global _dotenv_origin
    _dotenv_origin = DotenvOrigin(skipped="--no-env-file")


def dotenv_origin() -> DotenvOrigin:
    """The .env file this process read and the names it set (values are never kept here)."""
    return _dotenv_origin


def environment_table() -> str:
    """HONOURED as the Markdown table the README shows."""
    rows = [f"| `{name}` | {meaning} |" for name, meaning in HONOURED.items()]
    return "\n".join(["| Variable | What it does |", "| --- | --- |", *rows])


def cache_root() -> Path:
    """Where peftstudio caches what it builds: `$PEFTSTUDIO_CACHE`, else `~/.cache/peftstudio`."""
    configured = os.environ.get("PEFTSTUDIO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "peftstudio"


@dataclass(frozen=True)
class ProcessPlace:
    """Where this process stands in a multi-process run, as its launcher (torchrun, accelerate)
    told it; one process alone is rank 0 of 1 with no local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def launched(self) -> bool:
        """True inside a worker that a launcher started (it trains in place, never launches)."""
        return self.local_rank is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_place() -> ProcessPlace:
    """This process's place, from the launcher's RANK / WORLD_SIZE / LOCAL_RANK."""
    local = os.environ.get("LOCAL_RANK")
    return ProcessPlace(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                        int(local) if local is not None else None)


def token_environment() -> dict[str, str]:
    """The variables `doctor` inspects to say whether hub and W&B tokens are set (it never
    reports their values)."""
    names = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "XDG_CACHE_HOME", "WANDB_API_KEY", "COMET_API_KEY")
    return {name: os.environ[name] for name in names if name in os.environ}


def wandb_variables() -> tuple[str | None, bool]:
    """(WANDB_MODE when set, whether WANDB_API_KEY is set): what picks W&B's mode."""
    return os.environ.get("WANDB_MODE") or None, bool(os.environ.get("WANDB_API_KEY"))


def comet_api_key_set() -> bool:
    """Whether COMET_API_KEY is set (comet_ml reads the value itself)."""
    return bool(os.environ.get("COMET_API_KEY"))


def quiet_comet() -> None:
    """Turn off comet_ml's error reporting to Comet's Sentry, which it does even offline, unless
    the user decided otherwise. Must run before comet_ml is imported (it starts at import)."""
    os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")


def trackio_dir_variable() -> str | None:
    """TRACKIO_DIR, when set."""
    return os.environ.get("TRACKIO_DIR") or None


def trackio_remote_variable() -> str | None:
    """The name of the variable that sends Trackio runs off this machine (trackio reads it
    itself), or None: the run stays in the local store."""
    return next((name for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL") if os.environ.get(name)), None)


def mlflow_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI, when set."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def allow_mlflow_file_store() -> None:
    """Opt in to MLflow 3's file store (a run dir needs no server, no database), unless the
    user decided otherwise."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def quiet_tokenizer_threads() -> None:
    """Turn off the tokenizers library's thread pool (and its warning when a process forks),
    unless the user decided otherwise."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Notices libraries log on import that say nothing about the user's run: bitsandbytes asks for
# the optional `kernels` package on CPU (its built-in kernels work without it, and that package
# must not be installed here), transformers asks for a Comet key whenever comet_ml is installed
# (logging=comet runs offline without one), DeepSpeed says it picked the CPU on a CPU machine.
_IMPORT_NOTICES = {"bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
                   "transformers.integrations.integration_utils": "comet_ml is installed but the Comet API Key",
                   "DeepSpeed": "Setting accelerator to CPU"}


def quiet_library_notices() -> None:
    """Drop the log lines of _IMPORT_NOTICES (by logger and message start); every other line of
    those loggers still shows."""
    import logging

    for name, start in _IMPORT_NOTICES.items():
        logging.getLogger(name).addFilter(lambda record, start=start: not record.getMessage().startswith(start))


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process: this one's, plus `extra` (a job's secrets)."""
    return {**os.environ, **extra}


def mlflow_credentials() -> tuple[str | None, str | None, str | None]:
    """(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN), each when set."""
    return tuple(os.environ.get(name) or None for name in  # type: ignore[return-value]
                 ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"))


def bound_mlflow_requests() -> None:
    """Bound the MLflow client's retries and timeout (its defaults retry for minutes, and a run
    must never wait that long on a tracker), unless the user decided otherwise."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def wandb_base_url() -> str:
    """WANDB_BASE_URL, else W&B's cloud."""
    return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
