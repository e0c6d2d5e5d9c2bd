"""Shared fixtures: the repo root on sys.path (for run.py), composed configs, tiny models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture
def one_thread():
    """Tiny fp64 depthwise convs run ~30x slower with 2 OpenMP threads than with 1 on a shared 2-core machine;
    modules of such tests use `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def compose():
    """compose(overrides, hydra=False) -> the composed DictConfig, exactly as `python run.py ...` sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import run

    run.register_schema()

    def _compose(overrides: list[str], hydra: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=hydra)

    return _compose
