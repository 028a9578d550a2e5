"""Choosing a store by URL."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Settings
from conveyor.errors import (
    ConfigurationError,
)


def test_unsupported_url_is_a_clear_error() -> None:
    app = Conveyor("postgres://db/x", settings=Settings.from_env({}))
    from conveyor.backends import backend_from_url

    with pytest.raises(ConfigurationError, match="unsupported store URL"):
        backend_from_url(app.url)
