"""A Hydra launcher that spreads sweep jobs over the GPUs of one machine, one job per GPU at a time.

    python run.py -m experiment=main_qwen hydra/launcher=gpu_pool              # every visible GPU
    python run.py -m experiment=main_qwen hydra/launcher=gpu_pool hydra.launcher.gpus=[0,2]

Each job is its own process (a fresh CUDA context, no memory left over from the previous job) started with
CUDA_VISIBLE_DEVICES set to one GPU; its output goes to <sweep dir>/<job>/job.log. submitit's local executor
gives every job the same first GPUs, which is why this exists.
"""

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, and string annotations
# on the config dataclass would then fail to resolve.
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)


@dataclass
class GPUPoolConf:
    _target_: str = "hydra_plugins.s0_gpu_pool.gpu_pool.GPUPoolLauncher"
    gpus: Any = None  # list of device indices; null = every GPU torch can see
    poll_seconds: float = 1.0


ConfigStore.instance().store(group="hydra/launcher", name="gpu_pool_base", node=GPUPoolConf, provider="s0")


class JobFailed(RuntimeError):
    pass


class GPUPoolLauncher(Launcher):
    def __init__(self, gpus: Sequence[int] | None = None, poll_seconds: float = 1.0) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.poll_seconds = poll_seconds
        self.config = None
        self._running: dict[int, tuple[subprocess.Popen, int, Sequence[str]]] = {}

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config = config

    def _devices(self) -> list[int]:
        if self.gpus is not None:
            return self.gpus
        import torch

        devices = list(range(torch.cuda.device_count()))
        if not devices:  # a user's mistake: one line and exit code 2, like every config error (run.py)
            print(
                "error: hydra/launcher=gpu_pool found no CUDA GPU; drop it (jobs then run one after another), "
                "use hydra/launcher=submitit_local, or name the GPUs with hydra.launcher.gpus=[0,1]",
                file=sys.stderr,
            )
            sys.exit(2)
        return devices

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        free = self._devices()
        log.info(f"gpu_pool: {len(job_overrides)} jobs over GPUs {free}")
        try:
            return self._run(job_overrides, initial_job_idx, sweep_dir, free)
        except KeyboardInterrupt:
            # Ctrl-C reaches every job (one process group): let each stop, then report once (run.py)
            for proc, _, _ in self._running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise

    def _run(self, job_overrides, initial_job_idx, sweep_dir, free) -> Sequence[JobReturn]:
        pending = list(enumerate(job_overrides, start=initial_job_idx))
        running = self._running = {}
        returns: dict[int, JobReturn] = {}
        while pending or running:
            while pending and free:
                idx, overrides = pending.pop(0)
                gpu = free.pop(0)
                job_dir = sweep_dir / str(idx)
                job_dir.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, sys.argv[0], *overrides, f"hydra.run.dir={job_dir}"]
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
                with open(job_dir / "job.log", "w") as out:
                    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
                running[idx] = (proc, gpu, overrides)
                log.info(f"gpu_pool: job {idx} on GPU {gpu}: {' '.join(overrides)}")
            time.sleep(self.poll_seconds)
            for idx in [i for i, (p, _, _) in running.items() if p.poll() is not None]:
                proc, gpu, overrides = running.pop(idx)
                free.append(gpu)
                ok = proc.returncode == 0
                ret = JobReturn(overrides=list(overrides), working_dir=str(sweep_dir / str(idx)))
                ret.status = JobStatus.COMPLETED if ok else JobStatus.FAILED
                ret.return_value = (
                    proc.returncode
                    if ok
                    else JobFailed(
                        f"job {idx} exited with {proc.returncode}; see {sweep_dir / str(idx) / 'job.log'}"
                    )
                )
                returns[idx] = ret
                log.info(f"gpu_pool: job {idx} {'done' if ok else 'FAILED'} (GPU {gpu})")
        return [returns[i] for i in sorted(returns)]
