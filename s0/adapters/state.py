"""S0 tuning (paper Sec 3.1, Algorithm 1): one learned initial state per recurrent layer, weights frozen.

    adapter = S0Adapter(model, S0Config(alpha=0.07))     # zero-initialised fp32 states, all recurrent layers
    with adapter.active():
        model.generate(...)                                # each sequence starts from alpha * S0

The state enters the recurrence once, before the first token (see injection.py); decode steps run the base
model's code unchanged. `StateOffsetAdapter` (offset.py) shares this class and differs only in where the tensor
enters.

Alpha semantics (`alpha_mode`), all giving the injected state as a function of the trained tensor S:

    "inference"            train on S, inject alpha * S at inference.  DEFAULT: the reference implementation
                           trains with alpha = 1 and scales afterwards (PITFALLS, "reference protocol").
    "train_and_inference"  alpha * S in training and inference, as Algorithm 1 writes the loss f(x; alpha S0).
    "normalized"           train on S, inject alpha * S / ||S||_F per layer at inference (reference MATH-500
                           runs); a zero state stays zero.

The L2 term (train.py) always applies to the trained tensor S, as in the paper's loss.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from s0.adapters.base import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    Adapter,
    AdapterError,
    ConfigMixin,
    check_identity,
    model_identity,
    read_json,
    write_json,
)
from s0.adapters.injection import Attachment, LayerInjection
from s0.adapters.kinds import RecurrentLayer, require_recurrent_layers

ALPHA_MODES = ("inference", "train_and_inference", "normalized")
DEFAULT_ALPHA_MODE = "inference"  # the reference implementation's practice (see module docstring)


@dataclasses.dataclass
class S0Config(ConfigMixin):
    alpha: float = dataclasses.field(default=1.0, metadata={"help": "state scale (0.07 GDN, 0.65 Mamba-2)"})
    alpha_mode: str = dataclasses.field(
        default=DEFAULT_ALPHA_MODE, metadata={"help": " | ".join(ALPHA_MODES)}
    )
    layers: list[int] | None = dataclasses.field(
        default=None, metadata={"help": "ordinal positions among recurrent layers; None = all (Table 5)"}
    )

    def __post_init__(self) -> None:
        if self.alpha_mode not in ALPHA_MODES:
            raise AdapterError(f"alpha_mode '{self.alpha_mode}' is not one of {', '.join(ALPHA_MODES)}")
        if self.layers is not None:
            self.layers = sorted({int(i) for i in self.layers})
            if not self.layers:
                raise AdapterError("layers: empty list; use None for all recurrent layers")


def scaled_state(s: torch.Tensor, alpha: float, alpha_mode: str, training: bool) -> torch.Tensor:
    """The tensor injected for a trained state `s` (module docstring gives the three formulas)."""
    if alpha_mode == "train_and_inference":
        return alpha * s
    if training:  # "inference" and "normalized" train the raw state
        return s
    if alpha_mode == "inference":
        return alpha * s
    norm = torch.linalg.vector_norm(s)
    return torch.where(norm > 0, alpha * s / norm.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))


class StateAdapter(Adapter):
    """Shared by S0 and state-offset: one fp32 tensor per selected recurrent layer, zero-initialised."""

    method = "state"
    config_cls: type = S0Config
    param_prefix = "state"

    def __init__(
        self,
        model: nn.Module,
        config: S0Config | None = None,
        dtype: torch.dtype = torch.float32,
        fix_padding: bool = True,
        device: torch.device | str | None = None,
        **fields: Any,
    ):
        """`fields` override `config` fields. The states live on `device` (default: the model's), in `dtype`
        (float32 as in the paper; float64 for exactness tests). `fix_padding=False` reproduces the naive injection
        (pads decay the state), kept only to show the bug in tests."""
        super().__init__()
        if config is None:
            config = self.config_cls(**fields)
        elif fields:
            config = dataclasses.replace(config, **fields)
        self.model, self.config, self.fix_padding = model, config, fix_padding
        all_layers = require_recurrent_layers(
            model, getattr(model.config, "_name_or_path", "") or type(model).__name__
        )
        self.layers: list[RecurrentLayer] = self._select(all_layers, config.layers)
        device = device if device is not None else next(model.parameters()).device
        self.states = nn.ParameterDict(
            {
                str(r.index): nn.Parameter(torch.zeros(r.state_shape, dtype=dtype, device=device))
                for r in self.layers
            }
        )
        self._attachment: Attachment | None = None

    @staticmethod
    def _select(layers: list[RecurrentLayer], positions: list[int] | None) -> list[RecurrentLayer]:
        if positions is None:
            return layers
        bad = [p for p in positions if not 0 <= p < len(layers)]
        if bad:
            raise AdapterError(
                f"layers: position(s) {bad} out of range; this model has {len(layers)} recurrent layers "
                f"(valid 0..{len(layers) - 1}, counted among recurrent layers only)"
            )
        return [layers[p] for p in positions]

    # -- tensors
    def named_parameters(self) -> dict[str, torch.Tensor]:
        return {f"{self.param_prefix}.{i}": p for i, p in self.states.items()}

    def injected(self, layer_index: int) -> torch.Tensor:
        """What enters layer `layer_index` now (depends on alpha, alpha_mode and train/inference)."""
        return scaled_state(
            self.states[str(layer_index)], self.config.alpha, self.config.alpha_mode, self.training
        )

    def _injection(self, layer: RecurrentLayer) -> LayerInjection:
        raise NotImplementedError

    # -- on/off
    @property
    def is_active(self) -> bool:
        return self._attachment is not None

    def activate(self) -> StateAdapter:
        if self._attachment is not None:
            return self
        owner = getattr(self.model, "_s0_active_adapter", None)
        if owner is not None and owner is not self:
            raise AdapterError("another state adapter is active on this model; deactivate it first")
        self._attachment = Attachment(self.layers, {r.index: self._injection(r) for r in self.layers})
        self.model._s0_active_adapter = self
        return self

    def deactivate(self) -> StateAdapter:
        if self._attachment is not None:
            self._attachment.remove()
            self._attachment = None
            self.model._s0_active_adapter = None
        return self

    # -- swapping and persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.named_parameters().items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy tensors into the existing parameters in place (no model change, no new Parameter objects)."""
        mine = self.named_parameters()
        if set(tensors) != set(mine):
            raise AdapterError(
                f"state set has tensors {sorted(tensors)}, this adapter has {sorted(mine)}: "
                "trained on other layers (layers=...) or another method"
            )
        for name, t in tensors.items():
            if tuple(t.shape) != tuple(mine[name].shape):
                raise AdapterError(
                    f"{name}: saved shape {tuple(t.shape)} != model state shape {tuple(mine[name].shape)}"
                )
        with torch.no_grad():
            for name, t in tensors.items():
                mine[name].copy_(t.to(mine[name].dtype))

    def swap(self, other: dict[str, torch.Tensor] | StateAdapter | str | Path) -> StateAdapter:
        """Replace the trained states by another set (a state dict, an adapter, or a saved directory)."""
        if isinstance(other, StateAdapter):
            tensors = other.state_dict()
        elif isinstance(other, (str, Path)):
            meta = read_json(Path(other) / CONFIG_FILE)
            if meta.get("s0_method") != self.method:
                raise AdapterError(f"{other} holds a '{meta.get('s0_method')}' adapter, not '{self.method}'")
            check_identity(meta["model"], self.model, other, strict_layers=False)
            tensors = load_file(str(Path(other) / WEIGHTS_FILE))
            self.config = self.config_cls.from_dict(meta["config"])
        else:
            tensors = other
        self.load_state_dict(tensors)
        return self

    def save(self, directory: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.named_parameters().items()}
        save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "pt", "s0_method": self.method})
        write_json(
            d / CONFIG_FILE,
            {
                "s0_method": self.method,
                "format_version": FORMAT_VERSION,
                "config": self.config.to_dict(),
                "alpha": self.config.alpha,
                "alpha_mode": self.config.alpha_mode,
                "layer_indices": [r.index for r in self.layers],
                "layer_kinds": [r.kind for r in self.layers],
                "state_shapes": {k: list(v.shape) for k, v in tensors.items()},
                "dtype": str(next(iter(tensors.values())).dtype).replace("torch.", "") if tensors else None,
                "num_trainable": self.num_trainable(),
                "model": model_identity(self.model),
                "extra_meta": extra_meta or {},
            },
        )
        return d

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, **kwargs: Any) -> StateAdapter:
        d = Path(directory)
        meta = read_json(d / CONFIG_FILE)
        if meta.get("s0_method") != cls.method:
            raise AdapterError(f"{d} holds a '{meta.get('s0_method')}' adapter, not '{cls.method}'")
        check_identity(meta["model"], model, d, strict_layers=True)
        tensors = load_file(str(d / WEIGHTS_FILE))
        dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
        adapter = cls(model, cls.config_cls.from_dict(meta["config"]), dtype=dtype, **kwargs)
        adapter.load_state_dict(tensors)
        adapter.saved_meta = meta
        return adapter


class S0Adapter(StateAdapter):
    """Learned initial states: injected once, before the first token, for every sequence."""

    method = "s0"
    config_cls = S0Config
    param_prefix = "s0"

    def _injection(self, layer: RecurrentLayer) -> LayerInjection:
        return LayerInjection(
            layer.kind, initial_state=lambda i=layer.index: self.injected(i), fix_padding=self.fix_padding
        )
