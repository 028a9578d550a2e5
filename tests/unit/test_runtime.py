"""Which addresses the API may be served on without auth."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Settings
from conveyor.errors import ConfigurationError
from conveyor.runtime import check_exposure, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("::ffff:10.0.0.1", False),
        ("box.lan", False),  # names are not resolved: only localhost counts
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({}, True),
        ({"api_tokens": ("t",)}, False),
        ({"allow_insecure_no_auth": True}, False),
    ],
)
def test_check_exposure(settings: dict[str, object], refused: bool) -> None:
    app = Conveyor(settings=Settings(url="memory://", **settings))  # type: ignore[arg-type]
    check_exposure(app, "127.0.0.1")
    if refused:
        with pytest.raises(ConfigurationError, match="CONVEYOR_API_TOKENS"):
            check_exposure(app, "0.0.0.0")
    else:
        check_exposure(app, "0.0.0.0")
