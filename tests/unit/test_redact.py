"""Credential-like setting names are redacted wherever values are shown, logged or sent."""

import pytest

from peftstudio.config.importers import describe_value
from peftstudio.redact import REDACTED, is_secret_name
from peftstudio.track.trackers import loggable_settings

SECRET_NAMES = ["token", "logging.token", "hub_token", "push_to_hub_token", "hf_token", "auth_token", "access_token",
                "wandb_api_key", "apikey", "API_KEY", "client_secret", "password", "db_password", "credentials_file"]
PLAIN_NAMES = ["max_new_tokens", "pad_token", "tokenizer_type", "include_tokens_per_second", "special_tokens",
               "training.max_seq_length", "peft.target_modules", "data.chat_template"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_credential_names_are_secret(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_names_that_only_mention_tokens_are_not(name):
    assert not is_secret_name(name)


def test_importer_and_trackers_hide_the_same_names():
    settings = {name: "hf_abc123" for name in SECRET_NAMES + PLAIN_NAMES}
    assert set(loggable_settings(settings)) == set(PLAIN_NAMES)
    assert all(describe_value(name, "hf_abc123") == REDACTED for name in SECRET_NAMES)
    assert describe_value("pad_token", "<pad>") == '"<pad>"'
