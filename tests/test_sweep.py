"""Multirun end to end on the tiny models (issue 5's acceptance): a submitit_local sweep, a run killed with
SIGKILL mid-training, a rerun that skips finished runs and completes the killed one, and a results frame with
exactly the expected rows. And the Ray launcher (issue 13): a two-seed sweep through Ray on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s0.run import records


def cli(root: Path, tmp: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(root / "run.py"),
        *args,
        "debug=smoke",
        f"paths.results={tmp / 'runs'}",
        f"paths.cache={tmp / 'cache'}",
        f"hydra.run.dir={tmp / 'hydra'}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
    ]


def sweep(root: Path, tmp: Path, experiment: str, seeds: str) -> None:
    cmd = cli(root, tmp, "-m", f"experiment={experiment}", f"seed={seeds}", "arm=baseline,s0",
              "hydra/launcher=submitit_local", f"hydra.launcher.submitit_folder={tmp / 'submitit'}")  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def done_times(runs: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in runs.glob("*/done")}


@pytest.mark.slow  # about 5 minutes on 2 cores: make test-slow
def test_sweep_kill_and_resume(root, tmp_path):
    runs = tmp_path / "runs"
    sweep(root, tmp_path, "main_qwen", "42,7")
    sweep(root, tmp_path, "main_falcon", "42,7")
    first = done_times(runs)
    assert len(first) == 8  # 2 experiments x 2 seeds x (baseline, s0)

    # A third run, killed with SIGKILL once training has started (its log says collection is over).
    cmd = cli(root, tmp_path, "experiment=main_qwen", "seed=123", "arm=s0")
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    killed_dir = None
    while time.time() < deadline and killed_dir is None:
        for log in runs.glob("*/run.log"):
            if log.parent.name not in first and "collect:" in log.read_text():
                killed_dir = log.parent
        time.sleep(0.02)
    assert killed_dir is not None, "the third run never reached training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not records.is_done(killed_dir), "training finished before the kill; the test needs a slower run"

    # A partial run is listed as unfinished and never read as a result.
    partial = records.load_results(runs)
    assert killed_dir.name in partial.unfinished
    assert killed_dir.name not in set(partial.metrics.run_id)

    # Rerun the sweeps, the third seed included: finished runs are skipped, the killed one completes.
    sweep(root, tmp_path, "main_qwen", "42,7,123")
    sweep(root, tmp_path, "main_falcon", "42,7")
    after = done_times(runs)
    assert {k: after[k] for k in first} == first, "a finished run was recomputed"
    res = records.load_results(runs)
    assert res.unfinished == [] and res.corrupt == {}
    pass1 = res.metrics[res.metrics.metric == "pass@1"]
    got = sorted(zip(pass1.experiment, pass1.model, pass1.arm, pass1.seed))
    want = sorted(
        [("main_qwen", "tiny_qwen3_5", a, s) for a in ("baseline", "s0") for s in (42, 7, 123)]
        + [("main_falcon", "tiny_falcon_h1", a, s) for a in ("baseline", "s0") for s in (42, 7)]
    )
    assert got == want
    assert len(res.metrics) == len(want) * 3  # n_eval, pass@1, n_train per run


def test_ray_sweep_runs_each_seed_as_a_ray_job_on_cpu(root, tmp_path):
    """hydra/launcher=ray (conf/hydra/launcher/ray.yaml) without a GPU: num_gpus=0, Ray started with 2 CPUs and
    no dashboard; each seed is a Ray task (its output carries Ray's worker prefix) and leaves a finished run."""
    cmd = cli(root, tmp_path, "-m", "experiment=main_qwen", "seed=42,7", "arm=baseline", "hydra/launcher=ray",
              "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.init.num_cpus=2")  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "Ray Launcher is launching 2 jobs" in log and "(_run_job pid=" in log
    assert "validated against ConfigStore schema" not in log  # run.py silences Hydra's same-name notice
    res = records.load_results(tmp_path / "runs")
    assert res.unfinished == [] and res.corrupt == {}
    pass1 = res.metrics[res.metrics.metric == "pass@1"]
    assert sorted(zip(pass1.arm, pass1.seed)) == [("baseline", 7), ("baseline", 42)]


def test_ray_asking_a_gpu_on_a_machine_without_one_is_one_line(root, tmp_path):
    """The default asks one GPU per job; with none here and no cluster, Ray would queue the jobs forever."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU")
    cmd = cli(root, tmp_path, "-m", "experiment=main_qwen", "seed=42,7", "hydra/launcher=ray")
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "hydra.launcher.ray.remote.num_gpus=0" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "runs").exists()
