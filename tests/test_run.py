"""The command line: plan listings, and one-line errors (never a traceback) for config mistakes."""

from __future__ import annotations

import re
import signal
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
        (["experiment=layer_ablation", "method.layers=[0,99]", "plan=true"], "index 99 out of range"),
        (
            ["experiment=main_qwen", "method.num_virtual_tokens=5", "plan=true"],
            "no arm of experiment 'main_qwen'",
        ),
        (["experiment=main_qwen", "method=lora", "plan=true"], "arms.<arm>.method"),
        (
            [
                "-m",
                "experiment=main_qwen",
                "seed=42",
                "method.layers=[0,99]",
                "plan=true",
                "hydra.sweep.dir=/tmp/s0-test-sweep",
            ],
            "index 99 out of range",
        ),
    ],
)
def test_config_mistakes_get_one_line(root, args, message):
    out = run_cli(root, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def plan_lines(out: subprocess.CompletedProcess) -> dict[str, str]:
    """{arm: its plan line} of a `plan=true` listing."""
    assert out.returncode == 0, out.stderr
    return {
        line.split()[4]: line
        for line in out.stdout.splitlines()
        if re.match(r"\s+\d+\s+[0-9a-f]{12}\s", line)
    }


def test_method_override_shows_in_the_plan_and_the_run_id(root):
    before = plan_lines(run_cli(root, "experiment=main_qwen", "seed=42", "plan=true"))
    out = run_cli(root, "experiment=main_qwen", "seed=42", "method.alpha=0.1", "method.steps=9", "plan=true")
    after = plan_lines(out)
    assert "alpha=0.1 " in after["s0"] and "steps=9" in after["s0"]
    assert after["s0"].split()[1] != before["s0"].split()[1], "same run id: the run would be skipped as done"
    assert after["baseline"] == before["baseline"]
    assert "override    method.alpha=0.1 -> s0" in out.stdout


def test_method_override_in_a_sweep(root, tmp_path):
    """Each sweep job applies its own value (Hydra's per-job overrides, not sys.argv)."""
    out = run_cli(root, "-m", "experiment=main_qwen", "seed=42", "arm=s0", "method.alpha=0.1,0.2", "plan=true",
                  f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    alphas = re.findall(r"\bs0\s+42\s+alpha=([\d.]+)", out.stdout)
    assert alphas == ["0.1", "0.2"]


def test_smoke_summary_says_what_runs_use(root):
    """Smoke mode swaps in the tiny model and caps generation at 16 tokens; the summary must say so."""
    out = run_cli(root, "experiment=passk", "debug=smoke", "plan=true")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines()[:8])
    assert lines["models"] == "tiny_qwen3_5 (random weights); smoke stand-in for qwen3_5_4b"
    assert lines["decoding"] == "sampled x2 at T=0.7, 16 new tokens, pass@[1]"
    assert lines["results"] == "./results/smoke/runs"


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["device=tpu", "plan=true"], "device 'tpu' is not one of auto, cpu, cuda, cuda:N, mps"),
        (["device=cuda:x", "debug=smoke", "plan=true"], "device 'cuda:x'"),
    ],
)
def test_device_mistakes_get_one_line(root, args, message):
    out = run_cli(root, *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.skipif(has_cuda(), reason="needs a machine without a CUDA GPU")
def test_missing_gpu_gets_one_line(root, tmp_path):
    out = run_cli(root, "experiment=main_qwen", "seed=42", "arm=baseline", "debug=smoke", "device=cuda")
    assert out.returncode == 2 and "torch sees no CUDA GPU" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_help_is_our_usage(root):
    out = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python run.py")
    assert "python run.py experiment=main_qwen plan=true" in out.stdout
    assert "s0/run/config.py" in out.stdout and "main_qwen" in out.stdout and "ray, slurm" in out.stdout
    assert "Powered by Hydra" not in out.stdout and "--hydra-help" in out.stdout


def test_ctrl_c_stops_in_one_line_and_says_how_to_resume(root, tmp_path):
    """SIGINT once a run has started: exit 130, one line on stderr, no traceback, no half-written run left as done."""
    cmd = [sys.executable, "run.py", "experiment=main_qwen", "debug=smoke", "seed=42", "arm=s0",
           f"paths.results={tmp_path}/runs", f"paths.cache={tmp_path}/cache", f"hydra.run.dir={tmp_path}/hydra"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if re.search(r"\] - run [0-9a-f]{12}: ", line):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()], err
    assert "interrupted" in err and "rerun the same command" in err
    assert not list((tmp_path / "runs").glob("*/done"))


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "is unreachable"),
    ],
)
def test_unreachable_hub_fails_fast_after_a_cpu_warning(root, tmp_path, env, reason):
    """No hub: one line at once (no retries); before it, a real-size model on the CPU gets a time estimate."""
    import os
    import time

    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    environ.update(env, HF_HOME=str(tmp_path / "hf"))
    args = ["experiment=main_qwen", "seed=42", "arm=baseline", "device=cpu", f"paths.results={tmp_path}/runs",
            f"paths.cache={tmp_path}/cache", f"hydra.run.dir={tmp_path}/hydra"]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "run.py", *args], cwd=root, env=environ, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert time.perf_counter() - start < 60  # startup on a loaded machine; the check itself takes < 5 s
    assert out.returncode == 2, out.stderr
    warning, error = out.stderr.strip().splitlines()
    assert warning.startswith("warning: qwen3_5_4b (4.0B) on the CPU: roughly") and "debug=smoke" in warning
    assert error.startswith("error: cannot load 'Qwen/Qwen3.5-4B'") and reason in error
    assert not list((tmp_path / "runs").glob("*"))


def test_logs_in_a_file_are_quiet(root, tmp_path):
    """Output to a file (not a terminal): no progress bars, each library notice once, no FutureWarning from
    peft's LoRA, and the run counted (run k of N)."""
    args = ["experiment=main_qwen", "debug=smoke", "seed=42", "arm=lora_r24_lr1e-4", f"paths.results={tmp_path}/runs",
            f"paths.cache={tmp_path}/cache", f"hydra.run.dir={tmp_path}/hydra"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "run.py", *args], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "\r" not in text and "it/s]" not in text
    notices = re.findall(r"falling back to its reference PyTorch implementation because `([^`]+)`", text)
    assert len(notices) == len(set(notices)), notices
    assert "FutureWarning" not in text
    assert re.search(r"run 1 of 1: tiny_qwen3_5 lora_r24_lr1e-4 seed 42; 0m00s elapsed", text)
    for stage in ("collect: ", "train: ", "evaluate: ", "done "):
        assert stage in text
