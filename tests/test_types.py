"""`mypy --strict` passes on the checked subset of xdphooks/ (the ``files`` of
[tool.mypy] in pyproject.toml; docs/architecture.md says how it grows). The list is
read from pyproject and handed to mypy as it is, so the test checks exactly what the
config names; any error fails it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def checked() -> list[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert cfg.get("strict") is True, "[tool.mypy] must say strict = true"
    return list(cfg["files"])


def test_checked_modules_exist():
    files = checked()
    assert files, "[tool.mypy] files is empty"
    missing = [f for f in files if not (REPO / f).is_file()]
    assert not missing, f"[tool.mypy] files names modules that do not exist: {missing}"
    assert files == sorted(set(files)), "[tool.mypy] files: keep the list sorted, once each"


def test_mypy_strict_passes_on_the_checked_subset(tmp_path):
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("MYPY MISSING: pip install -e '.[test]' (scripts/install-deps.sh does)")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml",
                        "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
                        *checked()],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and not r.stdout.strip(), \
        f"mypy --strict found errors:\n{r.stdout}{r.stderr}"
