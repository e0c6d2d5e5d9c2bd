"""Batched generation: prompts in, completion texts out, with whatever adapter is active on the model.

    texts = generate(model, tokenizer, prompts, GenerationSpec(max_new_tokens=512))

Prompts are sorted by length and cut into batches (left padded), so rows of one batch finish together and
little compute is spent on padding; outputs come back in the input order. Greedy output does not depend on
the batch composition: the S0 injection makes padded steps the identity (s0/adapters), and positions are
counted from each row's first real token.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from s0.seeding import forked_rng

log = logging.getLogger(__name__)
ENGINES = ("auto", "hf", "static")


@dataclass(frozen=True)
class GenerationSpec:
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    samples: int = 1  # completions per prompt
    batch_size: int = 16
    max_length: int = 2048  # prompt + completion; longer prompts are cut from the left
    seed: int = 0
    # "auto": s0.decode on CUDA, transformers' generate on CPU; "static": s0.decode anywhere; "hf": generate
    engine: str = "auto"
    prefill_chunk: int = 1024  # static engine: prompt tokens per prefill forward (bounds prefill memory)
    # static engine: torch.compile the decode step (s0.decode.resolve_compile says why it is off by default)
    compile: bool = False


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    spec: GenerationSpec,
    progress: bool = True,
    stats: GenerationStats | None = None,
    desc: str = "generate",
) -> list[list[str]]:
    """`spec.samples` completions for each prompt, as `out[prompt_index][sample_index]`.

    Sampling is seeded by `spec.seed` and the caller's random state is left as it was. With `generate` (engine
    "hf") the seed starts one forked RNG per call, so a rerun with the same batches reproduces it; with the static
    engine each (prompt, sample) row has its own stream (s0.decode.row_seed), so its samples also do not depend
    on the batch size or the other prompts.
    """
    ids = generate_ids(model, tokenizer, prompts, spec, progress, stats, desc)
    eos = eos_ids(model, tokenizer)
    return [
        [tokenizer.decode(_until_eos(row, eos), skip_special_tokens=True) for row in rows] for rows in ids
    ]


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    spec: GenerationSpec,
    progress: bool = True,
    stats: GenerationStats | None = None,
    desc: str = "generate",
) -> list[list[list[int]]]:
    """`generate` before decoding: the new token ids of each (prompt, sample), EOS and padding included."""
    stats = stats if stats is not None else GenerationStats()
    device = _model_device(model)
    encoded = encode_prompts(tokenizer, prompts, spec)
    # Each (prompt, sample) pair is one row; longest first so the first batch shows the memory peak.
    rows = sorted(
        ((i, s) for i in range(len(prompts)) for s in range(spec.samples)), key=lambda r: -len(encoded[r[0]])
    )
    out: list[list[list[int]]] = [[[] for _ in range(spec.samples)] for _ in prompts]
    pad_id = tokenizer.pad_token_id
    eos = eos_ids(model, tokenizer)
    engine = resolve_engine(model, spec.engine, device)
    bar = tqdm(total=len(rows), desc=desc, unit="seq", disable=not progress, leave=False)
    start = time.perf_counter()
    with forked_rng(device, seed=spec.seed if spec.do_sample else None):
        for b in range(0, len(rows), spec.batch_size):
            batch = rows[b : b + spec.batch_size]
            ids = [encoded[i] for i, _ in batch]
            width = max(map(len, ids))
            input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in ids], device=device)
            attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
            if engine == "static":
                new = _static(model, input_ids, attention_mask, spec, eos, pad_id, batch)
            else:
                new = _hf(model, input_ids, attention_mask, spec, eos, pad_id)
            for (i, s), row in zip(batch, new.tolist()):
                stats.new_tokens += len(_until_eos(row, eos))
                out[i][s] = row
            stats.seconds = time.perf_counter() - start
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
    bar.close()
    stats.prompts += len(prompts)
    return out


def encode_prompts(tokenizer, prompts: list[str], spec: GenerationSpec) -> list[list[int]]:
    """Token ids of each prompt, cut from the left so prompt and completion fit `spec.max_length`."""
    budget = spec.max_length - spec.max_new_tokens
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return [ids[-budget:] if budget > 0 else ids for ids in encoded]


def _hf(
    model, input_ids, attention_mask, spec: GenerationSpec, eos_ids: list[int], pad_id: int
) -> torch.Tensor:
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=spec.max_new_tokens,
        do_sample=spec.do_sample,
        temperature=spec.temperature if spec.do_sample else None,
        top_p=spec.top_p if spec.do_sample else None,
        top_k=None,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
    )
    return generated[:, input_ids.shape[1] :]


def _static(
    model, input_ids, attention_mask, spec: GenerationSpec, eos_ids: list[int], pad_id: int, rows
) -> torch.Tensor:
    from s0.decode import decode, row_seed

    # Each (prompt, sample) row draws from its own stream, so its samples do not depend on the batch it shares.
    seeds = [row_seed(spec.seed, i, s) for i, s in rows] if spec.do_sample else None
    return decode(model, input_ids, attention_mask, spec.max_new_tokens, eos_ids, pad_id,
                  temperature=spec.temperature if spec.do_sample else None, top_p=spec.top_p, row_seeds=seeds,
                  prefill_chunk=spec.prefill_chunk, compile_step=spec.compile).tokens  # fmt: skip


def resolve_engine(model: torch.nn.Module, engine: str, device: torch.device | None = None) -> str:
    """The engine a call runs: "static" or "hf". `auto` takes the static engine on CUDA when it supports the
    model (else logs why not) and `generate`, the reference, on CPU; `static` raises when unsupported."""
    from s0.decode import unsupported_reason

    if engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    device = device if device is not None else _model_device(model)
    if engine == "hf" or (engine == "auto" and device.type != "cuda"):
        return "hf"
    reason = unsupported_reason(model)
    if reason is None:
        return "static"
    if engine == "static":
        raise ValueError(f"engine='static' cannot run this model: {reason}; use engine='hf'")
    log.warning(
        "generation: the static engine cannot run this model (%s); using transformers' generate", reason
    )
    return "hf"


def eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _until_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[:j]
    return tokens
