"""Model registry: the paper's model families and the others issue 15 adds, one file each, built by one module.

    from s0.models import TINY_ARCH, build_model, tiny_tokenizer
    model = build_model("qwen3_5", TINY_ARCH["qwen3_5"])   # the tiny Qwen3.5, random weights, offline

    family.py     `Family`: what a family file declares (transformers classes, recurrence kind, tiny architecture,
                  checkpoint prefixes the causal LM drops)
    <family>.py   one per family: `FAMILY = Family(...)`
    registry.py   FAMILIES (one line per family) and TINY_ARCH
    build.py      building (hub, random, meta), checkpoint loading and verification, tokenizers, layer counts

A new family is its file plus its line in registry.py; real-size architectures and hub ids are conf/model/*.yaml.
"""

from s0.models.build import (
    HUB_TIMEOUT_S,
    RECURRENT_LAYER_TYPES,
    TEXT_PREFIX,
    TINY_CHAT_TEMPLATE,
    TINY_SPECIAL_TOKENS,
    ModelError,
    Weights,
    build_config,
    build_model,
    build_tokenizer,
    count_parameters,
    default_dtype,
    get_family,
    hub_source,
    load_checkpoint,
    n_recurrent_layers,
    proxy_tokenizer,
    tiny_tokenizer,
)
from s0.models.family import TINY_VOCAB, Family
from s0.models.registry import FAMILIES, TINY_ARCH

__all__ = [
    "FAMILIES",
    "HUB_TIMEOUT_S",
    "RECURRENT_LAYER_TYPES",
    "TEXT_PREFIX",
    "TINY_ARCH",
    "TINY_CHAT_TEMPLATE",
    "TINY_SPECIAL_TOKENS",
    "TINY_VOCAB",
    "Family",
    "ModelError",
    "Weights",
    "build_config",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "default_dtype",
    "get_family",
    "hub_source",
    "load_checkpoint",
    "n_recurrent_layers",
    "proxy_tokenizer",
    "tiny_tokenizer",
]
