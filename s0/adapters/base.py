"""What every adapter shares: the activate/deactivate surface, config round-trips, and the save format.

Save format (PEFT naming): `adapter_model.safetensors` (the trainable tensors) and `adapter_config.json` (the
sidecar: method, config, model identity, layer indices and shapes, plus whatever the caller passes as
`extra_meta`, e.g. the training config and a data hash). PEFT-backed adapters keep PEFT's own two files and add
`s0_meta.json` with the same identity fields, because PEFT validates its config file strictly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s0.adapters.kinds import recurrent_layers

FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "s0_meta.json"


class AdapterError(RuntimeError):
    """An adapter cannot be built, activated or loaded; the message says what to change."""


class ConfigMixin:
    """`to_dict` / `from_dict` for adapter config dataclasses; unknown keys fail loudly."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise AdapterError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**data)


def model_identity(model: nn.Module) -> dict[str, Any]:
    """What a saved adapter must match to be loaded: model type, width, and every recurrent layer's shape."""
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = getattr(base, "config", None)
    layers = recurrent_layers(base)
    return {
        "model_type": getattr(cfg, "model_type", type(base).__name__),
        "model_id": getattr(cfg, "_name_or_path", "") or "",
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "recurrent_layers": [[r.index, r.kind, list(r.state_shape)] for r in layers],
    }


def check_identity(saved: dict[str, Any], model: nn.Module, path: str | Path, strict_layers: bool) -> None:
    """Raise a clear AdapterError when a saved adapter does not fit `model`."""
    here = model_identity(model)
    for key in ("model_type", "hidden_size", "num_hidden_layers"):
        if saved.get(key) is not None and saved.get(key) != here[key]:
            raise AdapterError(
                f"adapter at {path} was trained on {key}={saved.get(key)!r} "
                f"(model '{saved.get('model_id') or '?'}'), but this model has {key}={here[key]!r}; "
                "load it into the architecture it was trained on."
            )
    if strict_layers and saved.get("recurrent_layers") != here["recurrent_layers"]:
        raise AdapterError(
            f"adapter at {path} expects recurrent layers {saved.get('recurrent_layers')} "
            f"([index, kind, state shape]), but this model has {here['recurrent_layers']}."
        )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise AdapterError(f"no {path.name} in {path.parent}: not a saved adapter directory")
    return json.loads(path.read_text())


def data_hash(examples: Any) -> str:
    """A short stable hash of training data (anything JSON-serialisable), for the sidecar."""
    blob = json.dumps(examples, sort_keys=True, default=lambda o: dataclasses.asdict(o)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_checksum(model: nn.Module) -> str:
    """sha256 over every parameter and buffer of the base model (adapter tensors excluded by construction).

    Each tensor enters by name, dtype, shape and a digest of its raw bits: on the CPU the bits themselves; on an
    accelerator two 64-bit sums of its raw words computed there (plain, and weighted by odd position-mixed
    coefficients), so only 16 bytes per tensor cross to the host. Issue 13: a host copy of every byte took about
    20 s per run for a 4B model. Any single changed word changes both sums (an odd coefficient times a non-zero
    difference is non-zero modulo 2^64); changes that cancel in both would need a ~2^-48 coincidence."""
    named = sorted(list(model.named_parameters()) + list(model.named_buffers()), key=lambda x: x[0])
    sums = {name: _word_sums(t.detach()) for name, t in named if t.device.type != "cpu"}
    host = (
        dict(zip(sums, torch.stack([torch.stack(p) for p in sums.values()]).cpu().tolist())) if sums else {}
    )
    h = hashlib.sha256()
    for name, t in named:
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if name in host:
            h.update(f"{host[name][0]}|{host[name][1]};".encode())
        else:
            h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-dim too
    return h.hexdigest()


_WORD = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MIX1, _MIX2 = 0x9E3779B97F4A7C15 - 2**64, 0xBF58476D1CE4E5B9 - 2**64  # splitmix64 constants, as int64
_CHUNK = 1 << 22  # words per pass: bounds the int64 temporaries at a few tens of MiB


def _word_sums(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of words, sum of word x odd coefficient of its position) of `t`'s raw bits, int64, wrapping; on `t`'s
    device, without a host sync."""
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    words = t.contiguous().reshape(-1).view(_WORD[t.element_size()])
    plain = torch.zeros((), dtype=torch.int64, device=t.device)
    weighted = torch.zeros((), dtype=torch.int64, device=t.device)
    for start in range(0, words.numel(), _CHUNK):
        w = words[start : start + _CHUNK].to(torch.int64)
        k = torch.arange(start, start + w.numel(), dtype=torch.int64, device=t.device) * _MIX1
        k = ((k ^ (k >> 29)) * _MIX2) | 1
        plain += w.sum()
        weighted += (w * k).sum()
    return plain, weighted


class Adapter:
    """The surface the runner and the training loop use, whatever the method.

    `model` is the module to call for forward and generate; `parameters()` are the trainable tensors.
    `activate`/`deactivate` switch the adapter's effect on and off without touching any weight.
    """

    method: str = "base"
    config: Any
    model: nn.Module

    def __init__(self) -> None:
        # The adapter's own train/inference switch (alpha semantics); independent of model.training.
        self.training = False

    # -- trainable tensors
    def named_parameters(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        return list(self.named_parameters().values())

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- on/off
    @property
    def is_active(self) -> bool:
        raise NotImplementedError

    def activate(self) -> Adapter:
        raise NotImplementedError

    def deactivate(self) -> Adapter:
        raise NotImplementedError

    @contextlib.contextmanager
    def active(self) -> Iterator[Adapter]:
        """Active inside the block; the previous on/off state is restored after it."""
        was = self.is_active
        if not was:
            self.activate()
        try:
            yield self
        finally:
            if not was:
                self.deactivate()

    @contextlib.contextmanager
    def inactive(self) -> Iterator[Adapter]:
        was = self.is_active
        if was:
            self.deactivate()
        try:
            yield self
        finally:
            if was:
                self.activate()

    @contextlib.contextmanager
    def train_mode(self, flag: bool = True) -> Iterator[Adapter]:
        """Training-time semantics inside the block (e.g. alpha_mode="inference" injects the raw state)."""
        prev, self.training = self.training, flag
        try:
            yield self
        finally:
            self.training = prev

    def remove(self) -> None:
        """Detach from the model for good (the runner reuses one loaded model across runs): afterwards the model
        is exactly the base model again, with no adapter modules, hooks or wrappers left."""
        self.deactivate()

    # -- persistence
    def save(self, directory: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, **kwargs: Any) -> Adapter:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """One JSON-able line for logs and result records."""
        return {"method": self.method, "trainable": self.num_trainable(), **self.config.to_dict()}


class NullAdapter(Adapter):
    """The frozen base model ("baseline"): no tensors, activate is a no-op; same surface as the others."""

    method = "baseline"

    @dataclasses.dataclass
    class Config(ConfigMixin):
        pass

    def __init__(self, model: nn.Module, config: Any = None):
        super().__init__()
        self.model, self.config = model, config or NullAdapter.Config()
        self._active = False

    def named_parameters(self) -> dict[str, torch.Tensor]:
        return {}

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> NullAdapter:
        self._active = True
        return self

    def deactivate(self) -> NullAdapter:
        self._active = False
        return self

    def save(self, directory: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_json(
            d / CONFIG_FILE,
            {
                "s0_method": self.method,
                "format_version": FORMAT_VERSION,
                "model": model_identity(self.model),
                "extra_meta": extra_meta or {},
            },
        )
        return d

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, **kwargs: Any) -> NullAdapter:
        return cls(model)
