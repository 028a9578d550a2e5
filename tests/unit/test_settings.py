"""Settings: arguments first, then CONVEYOR_* variables, then defaults."""

from __future__ import annotations

import pytest

from conveyor import Settings
from conveyor.errors import (
    ConfigurationError,
)


def test_settings_read_the_environment_and_arguments_win() -> None:
    env = {
        "CONVEYOR_URL": "memory://",
        "CONVEYOR_LEASE_SECONDS": "2.5",
        "CONVEYOR_API_TOKENS": "a, b,,",
        "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "1",
        "CONVEYOR_MAX_BODY_BYTES": "2048",
        "CONVEYOR_MAX_RESULT_BYTES": "4096",
    }
    settings = Settings.from_env(env, lease_seconds=9)
    assert settings.url == "memory://"
    assert settings.lease_seconds == 9
    assert settings.api_tokens == ("a", "b")
    assert settings.webhook_allow_private is True
    assert settings.max_body_bytes == 2048
    assert settings.max_result_bytes == 4096
    assert Settings.from_env({}).max_result_bytes == 1_048_576
    assert Settings.from_env({}).url == "sqlite:///./conveyor.db"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONVEYOR_LEASE_SECONDS": "soon"}, "CONVEYOR_LEASE_SECONDS"),
        ({"CONVEYOR_LEASE_SECONDS": "-1"}, "CONVEYOR_LEASE_SECONDS"),
        ({"CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "CONVEYOR_WEBHOOK_ALLOW_PRIVATE"),
        ({"CONVEYOR_MAX_BODY_BYTES": "1.5"}, "CONVEYOR_MAX_BODY_BYTES"),
        ({"CONVEYOR_MAX_RESULT_BYTES": "big"}, "CONVEYOR_MAX_RESULT_BYTES"),
        ({"CONVEYOR_MAX_RESULT_BYTES": "0"}, "CONVEYOR_MAX_RESULT_BYTES"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Settings.from_env(env)
