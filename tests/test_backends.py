"""Kernel backend choice: automatic, logged, forceable, and the Hopper fallback for fla's backward. The CUDA
cases are simulated (this machine has no GPU); the GPU session runs the real ones (`pytest -m gpu`)."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from s0 import backends
from s0.adapters import injection as inj


@pytest.fixture(autouse=True)
def restore_routes():
    before = inj.get_routes()
    yield
    for family, route in before.items():
        inj.set_route(family, route)


def test_cpu_without_packages_picks_pytorch_and_logs_why(caplog):
    if backends._version("fla") or backends._version("mamba_ssm"):
        pytest.skip("fla or mamba-ssm is installed here")
    with caplog.at_level(logging.INFO, logger="s0.backends"):
        choice = backends.select_backends(device="cpu")
    assert (choice["gdn"], choice["gdn_backward"], choice["mamba"]) == ("torch", "torch", "torch")
    assert choice["routes"] == {"gdn": "native", "mamba": "native"}  # transformers already fell back
    assert "not installed" in choice["reasons"]["gdn"]
    assert "kernel backends: gdn=torch" in caplog.text


def test_forcing_a_missing_backend_fails_with_an_install_hint():
    if backends._version("fla") is None:
        with pytest.raises(backends.BackendError, match="pip install flash-linear-attention"):
            backends.select_backends(gdn="fla", device="cpu")
    with pytest.raises(backends.BackendError, match="mamba-ssm"):
        backends.select_backends(mamba="mamba_ssm", device="cpu")
    with pytest.raises(backends.BackendError, match="must be one of"):
        backends.select_backends(gdn="triton")
    assert backends.select_backends(gdn="torch", mamba="torch", device="cpu")["reasons"]["mamba"].startswith(
        "forced"
    )


@pytest.mark.parametrize(
    ("capability", "triton", "tilelang", "refuses"),
    [((9, 0), "3.6.0", False, True), ((9, 0), "3.7.1", False, False), ((9, 0), "3.4.0", True, False),
     ((8, 0), "3.6.0", False, False), ((9, 0), "3.3.1", False, False)],
)  # fmt: skip
def test_fla_backward_refusal_rule(monkeypatch, capability, triton, tilelang, refuses):
    """GPU.md / PITFALLS: Hopper (sm90) with 3.4 <= triton < 3.7.1 and no tilelang."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(backends, "_version", lambda mod: triton if mod == "triton" else None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "tilelang" and tilelang else real(n, *a)
    )
    why = backends.fla_backward_refuses(torch.device("cuda"))
    assert (why is not None) == refuses
    if refuses:
        assert "3.7.1" in why


def test_simulated_hopper_with_fla_routes_training_to_pytorch(monkeypatch):
    """fla installed and working on an H100 with triton 3.6: fla for inference, PyTorch for any call a backward
    will run through; the choice is logged with a warning."""
    monkeypatch.setattr(backends, "_version", lambda mod: {"fla": "0.6.0", "triton": "3.6.0"}.get(mod))
    monkeypatch.setattr(backends, "_fla_smoke", lambda device: None)
    monkeypatch.setitem(inj._PACKAGE_PRESENT, "gdn", False)  # the fake kernels below get CPU tensors
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.warns(UserWarning, match="refuses"):
        choice = backends.select_backends(device="cuda")
    assert (choice["gdn"], choice["gdn_backward"]) == ("fla", "torch")
    assert inj.get_routes()["gdn"] == "torch_when_grad"

    calls = []

    def torch_kernel(q, k, v, **kw):
        calls.append("torch")
        return q * 1.0, None

    def fla_kernel(q, k, v, **kw):
        calls.append("fla")
        return q * 1.0, None

    fla_kernel.__wrapped__ = torch_kernel  # what transformers' decorator keeps
    dispatch = inj._gdn_dispatch("torch_chunk_gated_delta_rule", fla_kernel)
    x = torch.ones(1, 2, 1, 4)
    with torch.no_grad():
        dispatch(x, x, x, g=x[..., 0], beta=x[..., 0])
    dispatch(x, x, x, g=x[..., 0], beta=x[..., 0])  # nothing requires grad: still fla
    dispatch(x.requires_grad_(), x, x, g=x[..., 0], beta=x[..., 0])
    state = torch.zeros(1, 1, 4, 4, requires_grad=True)  # S0 training: only the state requires grad
    dispatch(
        torch.ones(1, 2, 1, 4),
        x.detach(),
        x.detach(),
        g=x[..., 0].detach(),
        beta=x[..., 0].detach(),
        initial_state=state,
    )
    assert calls == ["fla", "fla", "torch", "torch"]


def test_flash_qla_dispatch_is_switched_off(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "flash_qla" else real(n, *a)
    )
    monkeypatch.delenv("FLA_FLASH_QLA", raising=False)
    choice = backends.select_backends(device="cpu")
    import os

    assert os.environ["FLA_FLASH_QLA"] == "0" and "FLA_FLASH_QLA" in choice["reasons"]["env"]
    monkeypatch.setenv("FLA_FLASH_QLA", "1")  # a user's explicit setting wins
    backends.select_backends(device="cpu")
    assert os.environ["FLA_FLASH_QLA"] == "1"


def test_forced_torch_route_uses_the_wrapped_pytorch_function_even_with_an_adapter():
    inj.set_route("gdn", "torch")
    seen = []

    def torch_kernel(q, k, v, **kw):
        seen.append(kw.get("initial_state") is not None)
        return q * 1.0, None

    def native(q, k, v, **kw):
        raise AssertionError("native kernel must not run under route torch")

    native.__wrapped__ = torch_kernel
    dispatch = inj._gdn_dispatch("torch_chunk_gated_delta_rule", native)
    x = torch.ones(1, 2, 1, 4)
    dispatch(x, x, x, g=x[..., 0], beta=x[..., 0])
    token = inj._CURRENT.set(
        inj._Call(inj.LayerInjection("gdn", initial_state=lambda: torch.zeros(1, 4, 4)), None)
    )
    try:
        dispatch(x, x, x, g=x[..., 0], beta=x[..., 0])
    finally:
        inj._CURRENT.reset(token)
    assert seen == [False, True]


@pytest.mark.gpu
def test_gpu_backends_train_and_generate_with_s0():
    """On a GPU: the picked backends run a forward, a backward into S0 and generate, for both families."""
    from s0.adapters import S0Adapter
    from s0.models import TINY_ARCH, build_model, tiny_tokenizer

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    choice = backends.select_backends(device="cuda")
    tok = tiny_tokenizer()
    for family in ("qwen3_5", "falcon_h1"):
        model = build_model(family, TINY_ARCH[family], dtype=torch.bfloat16, device="cuda")
        adapter = S0Adapter(model, alpha=0.5)
        with torch.no_grad():
            for p in adapter.parameters():
                p.normal_()
        enc = tok(["hello", "a longer prompt"], return_tensors="pt", padding=True).to("cuda")
        with adapter.active(), adapter.train_mode():
            model(**enc).logits.float().pow(2).mean().backward()
        assert all(p.grad is not None and p.grad.abs().max() > 0 for p in adapter.parameters()), choice
        with adapter.active():
            model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
