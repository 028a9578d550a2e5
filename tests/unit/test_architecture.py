"""The dependency rules in pyproject.toml ([tool.importlinter]) hold, and they bite: the
same check without one of its allowed edges fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def lint_imports(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "pyproject.toml"
    path.write_text(config)
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert binary is not None, "import-linter is a dev dependency"
    return subprocess.run(
        [binary, "--config", str(path), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def allowed_edges() -> list[str]:
    contracts = tomllib.loads(PYPROJECT)["tool"]["importlinter"]["contracts"]
    return sorted({edge for c in contracts for edge in c.get("ignore_imports", [])})


def test_the_contracts_hold(tmp_path: Path) -> None:
    done = lint_imports(PYPROJECT, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("edge", allowed_edges())
def test_each_allowed_edge_is_needed(edge: str, tmp_path: Path) -> None:
    line = f'  "{edge}",\n'
    assert line in PYPROJECT
    done = lint_imports(PYPROJECT.replace(line, ""), tmp_path)
    assert done.returncode != 0, f"{edge} is allowed, but nothing needs it"
    assert "BROKEN" in done.stdout, done.stdout


def test_the_architecture_page_names_every_top_level_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "src" / "conveyor"
    modules = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if (p / "__init__.py").exists()
    }
    missing = sorted(m for m in modules if f"`{m}`" not in page and f"`{m}/`" not in page)
    assert not missing, f"docs/architecture.md does not say what these are for: {missing}"
