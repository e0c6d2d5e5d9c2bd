"""S0 as a library, outside the harness: wrap any supported transformers model, train, save, load.

    from s0 import S0Config, S0Model, get_s0_model
    model = get_s0_model(base, S0Config(alpha=0.07))        # one zero-initialised fp32 state per recurrent layer
    model.train(); ...; model.eval()                         # optimise model.trainable_parameters()
    model.generate(...)                                      # every sequence starts from alpha * S0
    model.save_pretrained("my_s0")                           # the harness's adapter format (+ base identity)
    again = S0Model.from_pretrained(fresh_base, "my_s0")

The wrapper is a thin shell around the harness's own adapters (`s0.adapters.S0Adapter` / `StateOffsetAdapter`,
exposed as `model.adapter`), so what it computes, trains and saves is exactly what the runner does: a directory
saved here loads with `s0.adapters.load_adapter` and the reverse.

Supported: models whose recurrent mixers are of a kind the injection knows (`supported_kinds()`); anything else
is refused in one line naming them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from s0.adapters import ADAPTERS
from s0.adapters import S0Config as StateConfig
from s0.adapters.base import CONFIG_FILE, AdapterError, check_identity, read_json
from s0.adapters.kinds import KINDS, recurrent_layers
from s0.adapters.state import StateAdapter

METHODS = ("s0", "state_offset")
# Base-config keys that say nothing about the architecture a state was trained on (bookkeeping, token ids,
# output switches, dtype, tie flag): left out of the config hash, so one config hashes the same whatever the
# dtype, the checkpoint's path or the tokenizer's special ids.
NON_ARCH_KEYS = {
    "architectures", "transformers_version", "dtype", "torch_dtype", "use_cache", "return_dict",
    "output_hidden_states", "output_attentions", "id2label", "label2id", "problem_type", "tokenizer_class",
    "task_specific_params", "chunk_size_feed_forward", "is_encoder_decoder", "pad_token_id", "bos_token_id",
    "eos_token_id", "initializer_range", "tie_word_embeddings",
}  # fmt: skip


@dataclasses.dataclass
class S0Config(StateConfig):
    """The adapter's config (`s0.adapters.S0Config`: alpha, alpha_mode, layers) plus which method to build."""

    method: str = dataclasses.field(
        default="s0",
        metadata={
            "help": "s0: learned initial state (Sec 3.1) | state_offset: per-step readout offset (Sec 5.5)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise AdapterError(f"S0Config.method '{self.method}' is not one of {', '.join(METHODS)}")

    def adapter_config(self) -> StateConfig:
        """The config the harness adapter stores (its own class, so its sidecar stays loadable by the harness)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(StateConfig)}
        return ADAPTERS[self.method].config_cls(**fields)


def supported_kinds() -> list[str]:
    """The recurrence kinds S0 can be injected into, from the kind registry, as `tag (model families)`:
    e.g. `gdn (qwen3_5)`, the families being those whose modeling modules the kind routes."""
    return [f"{k.name} ({', '.join(m.split('.')[-2] for m in k.modules)})" for k in KINDS.values()]


def _require_supported(model: nn.Module) -> None:
    if not recurrent_layers(model):
        cfg = getattr(model, "config", None)
        raise AdapterError(
            f"{type(model).__name__} ({getattr(cfg, 'model_type', '?')}) has no recurrent layer S0 can use; "
            f"supported kinds: {', '.join(supported_kinds())} (for a pure Transformer use LoRA or prefix tuning)"
        )


def base_config_summary(model: nn.Module) -> dict[str, Any]:
    """The base model's architecture fields (its config minus NON_ARCH_KEYS and private keys)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {"class": type(model).__name__}
    data = cfg.to_dict()
    # JSON round trip: the same value whether computed now or read back from the sidecar (tuples -> lists)
    return json.loads(
        json.dumps(
            {k: v for k, v in data.items() if k not in NON_ARCH_KEYS and not k.startswith("_")}, default=str
        )
    )


def config_hash(summary: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:16]


class S0Model(nn.Module):
    """A transformers causal LM with an S0 (or state-offset) adapter on it; calls go to the base model.

    `forward` and `generate` run with the state active (the adapter's hooks sit on the base model's mixers, so the
    base model itself is adapted while active). `train()` switches the state to its training semantics
    (alpha_mode) and keeps the frozen base model in eval mode, as the harness's loop does: FalconH1's fused
    training path would bypass the state (PITFALLS).
    """

    def __init__(self, model: nn.Module, adapter: StateAdapter, config: S0Config):
        super().__init__()
        self.base_model = model
        self.s0_states = adapter.states  # registered, so .to(), .parameters() and state_dict() see the states
        self.adapter = (
            adapter  # the harness adapter: s0.train.train(model.adapter, ...) runs the paper's loop
        )
        self.s0_config = config
        adapter.activate()
        self.train(False)

    # -- calls
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._check_wrapped()
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self._check_wrapped()
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)  # config, device, generation_config, ...

    def train(self, mode: bool = True) -> S0Model:
        self.training = mode
        self.adapter.training = mode
        self.base_model.eval()
        return self

    # -- trainable tensors
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def print_trainable_parameters(self) -> None:
        n = sum(p.numel() for p in self.trainable_parameters())
        frozen = sum(p.numel() for p in self.base_model.parameters())
        kinds = sorted({r.kind for r in self.adapter.layers})
        print(
            f"{self.s0_config.method}: {n:,} trainable state values in {len(self.adapter.layers)} "
            f"{'/'.join(kinds)} layers; base model {frozen:,} frozen ({100 * n / max(frozen, 1):.4f}% trainable)"
        )

    # -- on/off
    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[S0Model]:
        """The base model inside the block (bit for bit: no hook is left on it); the state is back after."""
        with self.adapter.inactive():
            yield self

    def unwrap(self) -> nn.Module:
        """Take the adapter off for good and return the base model, exactly as it was (weights still frozen)."""
        self.adapter.remove()
        self._unwrapped = True
        return self.base_model

    def _check_wrapped(self) -> None:
        if self.__dict__.get("_unwrapped"):
            raise AdapterError("this S0Model was unwrapped; call the base model it returned")

    # -- persistence
    def save_pretrained(self, directory: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """The adapter's own save format (adapter_model.safetensors + adapter_config.json), whose extra_meta also
        holds the base model's name_or_path, its architecture fields and their hash (checked by from_pretrained)."""
        summary = base_config_summary(self.base_model)
        base = {
            "base_model_name_or_path": getattr(getattr(self.base_model, "config", None), "_name_or_path", "")
            or "",
            "base_config_hash": config_hash(summary),
            "base_config": summary,
        }
        return self.adapter.save(directory, extra_meta={**(extra_meta or {}), **base})

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, directory: str | Path, is_trainable: bool = False, check_config: bool = True
    ) -> S0Model:
        """Load a saved S0 / state-offset adapter onto `model` (a fresh base). Refused in one line when `model` is
        of another architecture than the one it was saved from (model type, layer shapes, then config hash);
        `check_config=False` skips only the hash. The states are frozen unless `is_trainable`."""
        d = Path(directory)
        meta = read_json(d / CONFIG_FILE)
        method = meta.get("s0_method")
        if method not in METHODS:
            raise AdapterError(
                f"{d} holds a '{method}' adapter; S0Model loads {' or '.join(METHODS)} adapters"
            )
        _require_supported(model)
        check_identity(meta["model"], model, d, strict_layers=True)
        saved = meta.get("extra_meta", {})
        if check_config and "base_config_hash" in saved:
            _check_config(saved, model, d)
        adapter = ADAPTERS[method].load(d, model)
        adapter.states.requires_grad_(is_trainable)
        config = S0Config(**adapter.config.to_dict(), method=method)
        return cls(_frozen(model), adapter, config)


def _check_config(saved: dict[str, Any], model: nn.Module, path: Path) -> None:
    here = base_config_summary(model)
    if config_hash(here) == saved["base_config_hash"]:
        return
    old = saved.get("base_config", {})
    diff = sorted(k for k in set(old) | set(here) if old.get(k) != here.get(k))
    shown = ", ".join(f"{k} {old.get(k)!r} -> {here.get(k)!r}" for k in diff[:3]) + (
        ", ..." if len(diff) > 3 else ""
    )
    raise AdapterError(
        f"adapter at {path} was saved on '{saved.get('base_model_name_or_path') or '?'}' (config hash "
        f"{saved['base_config_hash']}), this model's config differs: {shown or 'hash only'}; "
        "load it onto that architecture (check_config=False skips this check)"
    )


def _frozen(model: nn.Module) -> nn.Module:
    # why: only the states train; a model fresh from from_pretrained has requires_grad=True everywhere
    model.requires_grad_(False)
    return model


def get_s0_model(model: nn.Module, config: StateConfig | None = None) -> S0Model:
    """Wrap a transformers causal LM with a fresh (zero) S0 or state-offset adapter, active, base frozen.

    `config`: `s0.S0Config` (its `method` picks the adapter), or the harness's `s0.adapters.S0Config` /
    `StateOffsetConfig` (the class picks it). None: S0 with alpha 1 on every recurrent layer."""
    if isinstance(model, S0Model):
        raise AdapterError("this model is already an S0Model; unwrap() it first")
    _require_supported(model)
    if config is None:
        config = S0Config()
    elif not isinstance(config, StateConfig):
        raise AdapterError(f"get_s0_model takes an S0Config, not {type(config).__name__}")
    elif not isinstance(config, S0Config):  # a harness config: its class names the method
        method = next(m for m in reversed(METHODS) if isinstance(config, ADAPTERS[m].config_cls))
        config = S0Config(**config.to_dict(), method=method)
    adapter = ADAPTERS[config.method](_frozen(model), config.adapter_config())
    return S0Model(model, adapter, config)
