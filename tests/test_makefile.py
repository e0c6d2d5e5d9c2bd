"""The Makefile (issue 11): `make help` lists every target, the per-table and per-figure ones included, and
the targets that need the environment set it up themselves (scripts/bootstrap.py) with the venv's python."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str) -> str:
    # Not the variables of a `make test PY=...` this runs under (MAKEFLAGS passes them on).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PY", "VENV")}
    cmd = ["make", "-s", "--no-print-directory", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def variable(name: str) -> list[str]:
    return make("--eval", f"print-var: ; @echo $({name})", "print-var").split()


def phony() -> set[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    names = {n for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for n in line.split()}
    for var in ("TABLES", "FIGURES"):
        if f"$({var})" in names:
            names = (names - {f"$({var})"}) | set(variable(var))
    return names


def test_help_lists_every_target_with_a_description():
    lines = make("help").splitlines()
    listed = [line.split()[0] for line in lines]
    assert len(listed) == len(set(listed))
    assert set(listed) == phony()
    assert {"table1", "table_sec6", "fig1", "fig4", "plan", "demo", "test", "test-slow"} <= set(listed)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_targets_use_the_venv_python_after_setup():
    for target in ("demo", "test", "plan", "table1", "fig2"):
        commands = make("-n", target).splitlines()
        assert commands[0].startswith("python3 scripts/bootstrap.py --python .venv/bin/python"), commands
        assert not any(re.match(r"(python|ruff|pytest) ", c) for c in commands), commands
    assert "-m ruff check ." in make("-n", "lint")
