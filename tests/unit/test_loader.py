"""Loading an app from module:attribute or path.py:attribute."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import (
    ConfigurationError,
)
from conveyor.loader import load_app


def test_load_app_by_path_and_module(tmp_path: Path) -> None:
    source = tmp_path / "myapp.py"
    source.write_text(
        "from conveyor import Conveyor\napp = Conveyor('memory://')\nnot_app = 3\n"
        "@app.task()\nasync def hello() -> str:\n    return 'hi'\n"
    )
    app = load_app(f"{source}:app")
    assert "hello" in app.tasks
    assert app.spec == f"{source.resolve()}:app"
    assert load_app("conveyor.demo:app").tasks
    for spec, needle in [
        ("nocolon", "module:attribute"),
        (f"{source}:missing", "found nothing"),
        (f"{source}:not_app", "found int"),
        (f"{tmp_path}/absent.py:app", "no such file"),
        ("no_such_module_xyz:app", "cannot import"),
    ]:
        with pytest.raises(ConfigurationError, match=needle):
            load_app(spec)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigurationError, match="boom at import"):
        load_app(f"{broken}:app")
