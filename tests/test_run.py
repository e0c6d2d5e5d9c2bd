"""The command line: plan listings, and one-line errors (never a traceback) for config mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args, "hydra.run.dir=/tmp/s0-test-hydra"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plan_lists_runs_without_loading_a_model(root):
    out = run_cli(root, "experiment=main_falcon", "plan=true")
    assert out.returncode == 0, out.stderr
    assert "runs        9" in out.stdout
    assert out.stdout.count("falcon_h1_7b") >= 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["model=gpt5"], "unknown model 'gpt5'"),
        (["experiment=main_qwen", "arms.s0.alpha=-1", "plan=true"], "arms.s0.alpha: must be > 0"),
        (["model=qwen2_5_3b_instruct", "method=s0", "plan=true"], "method=prefix"),
        (["experiment=layer_ablation", "arms.s0_early.layers=[0,99]", "plan=true"], "out of range"),
        (["experiment=main_qwen", "seeds=[1,x]", "plan=true"], "could not be converted to Integer"),
        (["sed=3"], "unknown config key 'sed'"),
    ],
)
def test_config_mistakes_get_one_line(root, args, message):
    out = run_cli(root, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
