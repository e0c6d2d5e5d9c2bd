"""LoRA and prefix tuning through `peft`, behind the same surface as S0 (not reimplementations).

    LoRA    (paper Sec 4.3, App A, App F): LoraConfig(r, lora_alpha=2r by default, target_modules from the model
            config: {q,k,v,o}_proj on Qwen3.5, {q,k,v,in}_proj on FalconH1), dropout 0.
    Prefix  (Sec 4.3, 5.8): PrefixTuningConfig(num_virtual_tokens=30, prefix_projection=True), the negative
            control on a pure Transformer; `encoder_hidden_size` sizes the projection MLP (the prefix_control
            experiment sets it so the trainable count matches S0's, "matched parameter count", Sec 5.8).

peft wraps the model, so `adapter.model` is the PeftModel (call it for forward and generate); the base model's
own weights are untouched (LoRA adds modules beside them; `merge()` folds them in, `unmerge()` takes them out).

Prefix generation does not go through peft's `prepare_inputs_for_generation`: from transformers 5.24 `generate`
passes the cache as `cache=` while peft 0.21 puts the prefix in `past_key_values=`, which transformers drops with a
warning, so the generated tokens were the base model's. `PrefixAdapter` installs its own (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s0.adapters.base import (
    META_FILE,
    Adapter,
    AdapterError,
    ConfigMixin,
    check_identity,
    model_identity,
    read_json,
    write_json,
)

# Paper Sec 4.3. Used when the caller gives no target_modules (the runner passes model.lora_targets).
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "qwen3_5_text": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3_5": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "falcon_h1": ["q_proj", "k_proj", "v_proj", "in_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


@dataclasses.dataclass
class LoraAdapterConfig(ConfigMixin):
    r: int = dataclasses.field(default=24, metadata={"help": "rank"})
    lora_alpha: int | None = dataclasses.field(default=None, metadata={"help": "None = 2r (App F)"})
    lora_dropout: float = dataclasses.field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    target_modules: list[str] | None = dataclasses.field(
        default=None, metadata={"help": "None = per-family default"}
    )


@dataclasses.dataclass
class PrefixAdapterConfig(ConfigMixin):
    num_virtual_tokens: int = dataclasses.field(default=30, metadata={"help": "prefix length"})
    prefix_projection: bool = dataclasses.field(default=True, metadata={"help": "MLP reparameterisation"})
    encoder_hidden_size: int | None = dataclasses.field(
        default=None, metadata={"help": "hidden width of the projection MLP; None = the model's hidden_size"}
    )


class _PeftAdapter(Adapter):
    config_cls: type = LoraAdapterConfig

    def __init__(
        self,
        model: nn.Module,
        config: Any = None,
        seed: int | None = None,
        _peft_model: Any = None,
        **fields: Any,
    ):
        super().__init__()
        import peft

        if config is None:
            config = self.config_cls(**fields)
        elif fields:
            config = dataclasses.replace(config, **fields)
        self.config, self.base_model = config, model
        if _peft_model is not None:
            self.model = _peft_model
        else:
            # peft draws the initial adapter weights from the global RNG: fork it so `seed` alone decides them.
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                self.model = peft.get_peft_model(model, self._peft_config(model))
        self._disabled = contextlib.ExitStack()
        self._active = True  # peft adapters are live as soon as they are created
        self._saved_weights: dict[str, torch.Tensor] | None = None  # LoRA merge: originals to restore exactly

    def _peft_config(self, model: nn.Module):
        raise NotImplementedError

    def named_parameters(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> _PeftAdapter:
        if not self._active:
            self._disabled.close()
            self._active = True
        return self

    def deactivate(self) -> _PeftAdapter:
        if self._active:
            self._disabled.enter_context(self.model.disable_adapter())
            self._active = False
        return self

    def remove(self) -> None:
        """Take the peft modules out of the base model (LoRA layers are unloaded unmerged, so the base weights
        are bit-identical to before); `self.model` must not be used afterwards."""
        self.activate()  # leave peft's disable_adapter context first
        if getattr(self.model.peft_config[self.model.active_adapter], "is_prompt_learning", False):
            return  # prefix tuning wraps the model but never modifies it
        if self._saved_weights is not None or any(getattr(m, "merged", False) for m in self.model.modules()):
            self.unmerge()
        self.model.unload()

    def save(self, directory: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(d))  # adapter_config.json + adapter_model.safetensors (peft's format)
        write_json(
            d / META_FILE,
            {
                "s0_method": self.method,
                "config": self.config.to_dict(),
                "num_trainable": self.num_trainable(),
                "model": model_identity(self.base_model),
                "extra_meta": extra_meta or {},
            },
        )
        return d

    @classmethod
    def load(
        cls, directory: str | Path, model: nn.Module, is_trainable: bool = False, **kwargs: Any
    ) -> _PeftAdapter:
        from peft import PeftModel

        d = Path(directory)
        meta = read_json(d / META_FILE)
        if meta.get("s0_method") != cls.method:
            raise AdapterError(f"{d} holds a '{meta.get('s0_method')}' adapter, not '{cls.method}'")
        check_identity(meta["model"], model, d, strict_layers=False)
        peft_model = PeftModel.from_pretrained(model, str(d), is_trainable=is_trainable)
        adapter = cls(model, cls.config_cls.from_dict(meta["config"]), _peft_model=peft_model)
        adapter.saved_meta = meta
        return adapter


class LoraAdapter(_PeftAdapter):
    method = "lora"
    config_cls = LoraAdapterConfig

    def _peft_config(self, model: nn.Module):
        from peft import LoraConfig

        c = self.config
        targets = c.target_modules or DEFAULT_LORA_TARGETS.get(getattr(model.config, "model_type", ""))
        if not targets:
            raise AdapterError(
                f"no LoRA target_modules given and no default for model_type "
                f"'{getattr(model.config, 'model_type', '?')}'; pass target_modules (model.lora_targets)"
            )
        c.target_modules = list(targets)
        return LoraConfig(
            r=c.r,
            lora_alpha=c.lora_alpha if c.lora_alpha is not None else 2 * c.r,
            lora_dropout=c.lora_dropout,
            target_modules=list(targets),
            bias="none",
            task_type="CAUSAL_LM",
        )

    def merge(self) -> None:
        """Fold the LoRA update into the weights (evaluation without the extra branch); `unmerge` undoes it.

        W + BA - BA is not W in floating point, so the unmerged weights are restored from a copy taken here:
        after `unmerge` the base weights are bit-identical (the runner checks a checksum)."""
        if self._saved_weights is None:
            self._saved_weights = {
                n: m.base_layer.weight.detach().clone()
                for n, m in self.model.named_modules()
                if hasattr(m, "lora_A") and hasattr(m, "base_layer")
            }
        self.model.merge_adapter()

    def unmerge(self) -> None:
        self.model.unmerge_adapter()
        if self._saved_weights is not None:
            modules = dict(self.model.named_modules())
            with torch.no_grad():
                for n, w in self._saved_weights.items():
                    modules[n].base_layer.weight.copy_(w)
            self._saved_weights = None


class PrefixAdapter(_PeftAdapter):
    method = "prefix"
    config_cls = PrefixAdapterConfig

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any):
        from s0.adapters.kinds import recurrent_layers

        if recurrent_layers(model):
            # peft puts the prefix in a DynamicCache, which hybrid models cannot read their conv and recurrent
            # states from: the forward stopped deep in transformers ("Cannot get conv state ...").
            raise AdapterError(
                f"prefix tuning needs a pure Transformer; {type(model).__name__} has recurrent layers (peft's "
                "prefix cache holds no recurrent state). The paper runs it on Qwen2.5 only (Sec 5.8)"
            )
        super().__init__(model, *args, **kwargs)
        # peft's generate calls the PeftModel's prepare_inputs_for_generation; an instance attribute wins over
        # the class's, and peft's disable_adapter saves and restores it, so `inactive()` still generates plainly.
        self.model.prepare_inputs_for_generation = _prefix_generation_inputs(self.model)

    def _peft_config(self, model: nn.Module):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=self.config.num_virtual_tokens,
            prefix_projection=self.config.prefix_projection,
            encoder_hidden_size=self.config.encoder_hidden_size or model.config.hidden_size,
        )


def _prefix_generation_inputs(peft_model: Any) -> Callable[..., dict[str, Any]]:
    """`prepare_inputs_for_generation` that makes each generate step see what a full peft forward sees.

    The prefix keys and values go into generate's own cache before the first forward (once: later steps find them
    there); the 2D mask gets ones for the virtual tokens in front, and positions move by their number, because
    peft's forward (training) numbers the real tokens from `num_virtual_tokens` (the cache length it sees). Left
    padding then works as in the base model: generate derives positions from the prompt mask."""
    base = peft_model.get_base_model()
    base_prepare = peft_model.base_model_prepare_inputs_for_generation
    n_virtual = peft_model.active_peft_config.num_virtual_tokens
    # The name the model's forward takes the cache under (`cache` from transformers 5.24, `past_key_values` before).
    cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def prepare(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = base_prepare(*args, **kwargs)
        ids = inputs.get("input_ids")
        batch = (ids if ids is not None else inputs["inputs_embeds"]).shape[0]
        cache = inputs.get(cache_key)
        if cache is None:  # use_cache=False: every step is a full forward, give it a fresh prefix
            inputs[cache_key] = peft_model.get_prompt(batch)
        elif cache.get_seq_length() == 0:  # the first forward of this generate call
            for layer_idx, (keys, values, *_) in enumerate(peft_model.get_prompt(batch)):
                cache.update(keys, values, layer_idx)
        mask = inputs.get("attention_mask")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                raise AdapterError(
                    "prefix generation needs a 2D attention mask (use the default dynamic cache)"
                )
            ones = torch.ones(batch, n_virtual, dtype=mask.dtype, device=mask.device)
            inputs["attention_mask"] = torch.cat([ones, mask], dim=1)
        if inputs.get("position_ids") is not None:
            inputs["position_ids"] = inputs["position_ids"] + n_virtual
        return inputs

    return prepare
