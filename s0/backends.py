"""Kernel backends for the recurrences: pick one that works, say which and why, let a config force one.

    from s0.backends import select_backends
    choice = select_backends(gdn="auto", mamba="auto", device="cuda")   # logs e.g.
    # gdn=fla (backward: torch): fla 0.6.0 installed; Hopper with triton 3.6.0 < 3.7.1: fla's backward refuses ...

GatedDeltaNet: flash-linear-attention (fla) when it imports, else transformers' PyTorch path. Mamba-2: mamba-ssm
when it imports (it needs its compiled extension), else PyTorch. transformers picks fla/mamba-ssm by itself at
import time; we route through the dispatchers of s0.adapters.injection:

    route "native"           whatever transformers resolved (fla / mamba-ssm / PyTorch)
    route "torch"            always transformers' PyTorch function (the decorated function's __wrapped__)
    route "torch_when_grad"  fla for inference, PyTorch for calls that a backward will run through. Used on
                             Hopper with 3.4 <= triton < 3.7.1 and no tilelang, where fla 0.6's gated chunk
                             backward raises (a Triton codegen bug corrupts dk, dg, db; fla issue #640).

Env: if the `flash_qla` package is installed, FLA_FLASH_QLA=0 is set (unless the user set it) because fla would
otherwise dispatch K=V=128 GDN to FlashQLA, whose gate gradients were reported inaccurate (PITFALLS).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from typing import Any

import torch

from s0.adapters import injection

log = logging.getLogger(__name__)

GDN_CHOICES = ("auto", "fla", "torch")
MAMBA_CHOICES = ("auto", "mamba_ssm", "torch")


class BackendError(RuntimeError):
    """A forced backend is not available; the message says how to install it or to use 'auto'."""


def _version(mod: str) -> str | None:
    try:
        m = importlib.import_module(mod)
    except Exception:
        return None
    return getattr(m, "__version__", "unknown")


def _parse(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def fla_backward_refuses(device: torch.device) -> str | None:
    """Why fla's GDN backward will refuse on `device`, or None if it should work."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    if torch.cuda.get_device_capability(device)[0] != 9:  # Hopper only
        return None
    triton_v = _version("triton")
    if triton_v is None or not _parse(triton_v)[:2] >= (3, 4) or _parse(triton_v) >= (3, 7, 1):
        return None
    if importlib.util.find_spec("tilelang") is not None:
        return None
    return (
        f"Hopper GPU with triton {triton_v} (3.4 <= v < 3.7.1) and no tilelang: fla's gated chunk backward "
        "refuses (Triton codegen bug, fla #640); training routes GDN to transformers' PyTorch kernel"
    )


def _fla_smoke(device: torch.device) -> str | None:
    """Run fla's chunk kernel once on tiny inputs; return the error text if it fails."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        b, t, h, k = 1, 16, 2, 16
        q, kk, v = (torch.randn(b, t, h, k, device=device, dtype=torch.bfloat16) for _ in range(3))
        g = -torch.rand(b, t, h, device=device)
        beta = torch.rand(b, t, h, device=device, dtype=torch.bfloat16)
        s0 = torch.zeros(b, h, k, k, device=device)
        chunk_gated_delta_rule(q, kk, v, g=g, beta=beta, initial_state=s0, output_final_state=True)
        return None
    except Exception as err:  # any failure means "not working here"
        return f"{type(err).__name__}: {err}"


def select_backends(
    gdn: str = "auto", mamba: str = "auto", device: str | torch.device | None = None
) -> dict[str, Any]:
    """Choose and apply kernel routes. Returns {"gdn", "gdn_backward", "mamba", "reasons"}."""
    if gdn not in GDN_CHOICES or mamba not in MAMBA_CHOICES:
        raise BackendError(
            f"backend.gdn must be one of {GDN_CHOICES} and backend.mamba one of {MAMBA_CHOICES}"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reasons: dict[str, str] = {}

    if importlib.util.find_spec("flash_qla") is not None and "FLA_FLASH_QLA" not in os.environ:
        os.environ["FLA_FLASH_QLA"] = "0"
        reasons["env"] = (
            "flash_qla installed: set FLA_FLASH_QLA=0 (its GDN gate gradients were reported inaccurate)"
        )

    fla_v = _version("fla")
    fla_ok = fla_v is not None and device.type == "cuda"
    if fla_ok:
        err = _fla_smoke(device)
        if err:
            fla_ok = False
            reasons["gdn_smoke"] = f"fla {fla_v} failed a smoke test: {err}"
            if gdn == "auto":
                warnings.warn(f"{reasons['gdn_smoke']}; using transformers' PyTorch GDN kernel", stacklevel=2)
    if gdn == "fla" and not fla_ok:
        raise BackendError(
            "backend.gdn=fla but flash-linear-attention is not usable here "
            f"({reasons.get('gdn_smoke') or ('not installed' if fla_v is None else 'needs a CUDA device')}); "
            "pip install flash-linear-attention fla-core, or use backend.gdn=auto"
        )
    use_fla = fla_ok and gdn in ("auto", "fla")
    gdn_choice = "fla" if use_fla else "torch"
    gdn_backward = gdn_choice
    if use_fla:
        refuse = fla_backward_refuses(device)
        reasons["gdn"] = f"fla {fla_v} installed and working"
        if refuse:
            gdn_backward = "torch"
            reasons["gdn_backward"] = refuse
            warnings.warn(refuse, stacklevel=2)
    elif gdn == "torch":
        reasons["gdn"] = "forced by backend.gdn=torch"
    else:
        reasons.setdefault(
            "gdn", "flash-linear-attention not installed" if fla_v is None else "fla needs CUDA"
        )

    mamba_v = _version("mamba_ssm")  # its import fails without the compiled extension (PITFALLS)
    mamba_ok = mamba_v is not None and device.type == "cuda"
    if mamba == "mamba_ssm" and not mamba_ok:
        raise BackendError(
            "backend.mamba=mamba_ssm but mamba-ssm does not import here (it needs its compiled CUDA extension; "
            "pip install --no-build-isolation mamba-ssm causal-conv1d), or use backend.mamba=auto"
        )
    mamba_choice = "mamba_ssm" if mamba_ok and mamba in ("auto", "mamba_ssm") else "torch"
    reasons["mamba"] = (
        f"mamba-ssm {mamba_v} imports"
        if mamba_choice == "mamba_ssm"
        else "forced by backend.mamba=torch"
        if mamba == "torch"
        else "mamba-ssm not importable (or no CUDA)"
    )

    # "native" is already PyTorch when the package does not import (transformers fell back at import time, and
    # its wrapper keeps the guard against packed sequences); "torch" is only needed to steer away from a package
    # that transformers did pick up.
    if gdn_choice == "fla":
        gdn_route = "native" if gdn_backward == "fla" else "torch_when_grad"
    else:
        gdn_route = "native" if fla_v is None else "torch"
    injection.install_known()
    injection.set_route("gdn", gdn_route)
    injection.set_route("mamba", "native" if mamba_choice == "mamba_ssm" or mamba_v is None else "torch")
    choice = {
        "gdn": gdn_choice,
        "gdn_backward": gdn_backward,
        "mamba": mamba_choice,
        "reasons": reasons,
        "routes": injection.get_routes(),
    }
    log.info(
        "kernel backends: gdn=%s (backward %s), mamba=%s; %s",
        gdn_choice,
        gdn_backward,
        mamba_choice,
        "; ".join(f"{k}: {v}" for k, v in reasons.items()),
    )
    return choice
