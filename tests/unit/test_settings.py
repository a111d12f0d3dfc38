"""One settings module reads the environment and names every variable the product honours."""

import re
from pathlib import Path

from peftstudio import settings
from peftstudio.track.trackers import wandb_mode

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "peftstudio"
ENVIRONMENT_READ = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b.*\b(environ|getenv)\b")


def test_only_the_settings_module_reads_the_environment():
    readers = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if ENVIRONMENT_READ.search(path.read_text(encoding="utf-8"))}
    assert readers == {"settings.py"}, f"read the environment through peftstudio.settings instead: {sorted(readers - {'settings.py'})}"


def test_the_readme_table_is_the_honoured_list():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings.environment_table() in readme, (
        "README.md's 'Environment variables' table must be settings.environment_table(): regenerate it with\n"
        "python -c 'from peftstudio.settings import environment_table; print(environment_table())'")
    for name in settings.HONOURED:
        assert f"| `{name}` |" in readme


def test_every_peftstudio_variable_named_in_the_sources_is_honoured():
    named = {name for path in PACKAGE.rglob("*.py")
             for name in re.findall(r"\bPEFTSTUDIO_[A-Z_]+\b", path.read_text(encoding="utf-8"))}
    assert named <= set(settings.HONOURED), sorted(named - set(settings.HONOURED))


def test_process_place_without_a_launcher_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert settings.process_place() == settings.ProcessPlace(0, 1, None)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    place = settings.process_place()
    assert place == settings.ProcessPlace(3, 4, 1) and place.launched and not place.is_main


def test_wandb_mode_follows_the_variables():
    assert wandb_mode("disabled", True)[0] == "disabled"
    assert wandb_mode(None, True)[0] == "online"
    assert wandb_mode(None, False)[0] == "offline"


def test_a_dotenv_file_fills_what_the_shell_does_not_set_and_aliases_the_tutorials_token_name(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("HUGGINGFACE_TOKEN=hf_from_dotenv\nWANDB_MODE=offline\nMODEL_NAME=google/gemma-3-4b-it\n"
                                   "# a comment\nWANDB_API_KEY=\"quoted key\"\n")
    for name in ("HUGGINGFACE_TOKEN", "HF_TOKEN", "MODEL_NAME", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the shell wins over .env
    added = settings.load_dotenv(tmp_path)
    import os

    assert added == {"HUGGINGFACE_TOKEN": "hf_from_dotenv", "MODEL_NAME": "google/gemma-3-4b-it",
                     "WANDB_API_KEY": "quoted key", "HF_TOKEN": "hf_from_dotenv"}
    assert os.environ["HF_TOKEN"] == "hf_from_dotenv" and os.environ["WANDB_MODE"] == "disabled"
    assert settings.load_dotenv(tmp_path / "nowhere") == {}
    assert settings.dotenv_origin().skipped == f"no {tmp_path / 'nowhere' / '.env'}"


def test_doctor_names_what_a_chosen_env_file_set_and_never_its_values(tmp_path, monkeypatch):
    from peftstudio.doctor.environment import check_dotenv

    chosen = tmp_path / "deploy.env"
    chosen.write_text("COMET_API_KEY=comet-s3cret-value\nWANDB_MODE=offline\n")
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert settings.load_dotenv(file=chosen) == {"COMET_API_KEY": "comet-s3cret-value"}
    check = check_dotenv()
    assert check.detail == f"{chosen}: set COMET_API_KEY; the shell's value kept for WANDB_MODE"
    assert "comet-s3cret-value" not in str(check.to_dict()) and "offline" not in check.detail
    settings.skip_dotenv()
    assert check_dotenv().detail == "none read (--no-env-file)"


def test_library_notices_are_dropped_and_nothing_else():
    import logging

    from peftstudio.settings import quiet_library_notices

    quiet_library_notices()

    def shown(name: str, message: str) -> bool:
        return logging.getLogger(name).filter(logging.LogRecord(name, logging.WARNING, __file__, 1, message, (), None))

    assert not shown("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: x")
    assert not shown("transformers.integrations.integration_utils", "comet_ml is installed but the Comet API Key is not")
    assert not shown("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, ...")
    for name in ("bitsandbytes.backends.cpu.ops", "transformers.integrations.integration_utils", "DeepSpeed"):
        assert shown(name, "a real problem"), name
    assert shown("peftstudio", "Setting accelerator to CPU"), "only the named library's logger is filtered"
