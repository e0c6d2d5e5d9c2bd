"""Randomness in one place: the per-run seed, and forked generators for the code that must not disturb it.

    seed_everything(42)               # at the start of a run: Python, numpy, torch (CPU and every CUDA device)
    with forked_rng(device, seed=7):  # inside: a private stream; after: the caller's state, untouched
        ...

Generation and training draw from forked streams seeded by the run, so neither depends on what ran before it
in the same process (a sweep's tenth run reproduces the same run started alone).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every generator a run can touch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_devices(device: torch.device | str | None) -> list[int]:
    """The CUDA device indices whose generator a fork on `device` must save and restore."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def forked_rng(device: torch.device | str | None = None, seed: int | None = None) -> Iterator[None]:
    """torch's CPU generator (and `device`'s, on CUDA) forked for the block, seeded with `seed` if given."""
    with torch.random.fork_rng(devices=rng_devices(device)):
        if seed is not None:
            torch.manual_seed(seed)
        yield
