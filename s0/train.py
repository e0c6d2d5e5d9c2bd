"""The one training loop every method uses (paper Sec 3.1 loss, Algorithm 1, App A Table 4).

    from s0.train import TrainExample, train
    result = train(adapter, examples, steps=20, lr=1e-3, l2=5e-4, grad_clip=1.0, seed=42)

Objective per step, over all N training examples (the reference's full pass per step):

    L = (1/N) sum_i CE_i + l2 * sum_tensors ||S||^2,
    CE_i = mean over example i's completion tokens of -log p(y_t | x, y_<t)      (prompt tokens masked)

i.e. tokens are averaged within each example, then examples are averaged: the reference accumulates one example
at a time (per-example mean CE, backward, divided by N). Batched modes compute the same sum, so the gradient is
the same up to floating point (tested to 1e-6 in float64). Then the global grad norm is clipped and Adam steps.

Batching (how the N examples are grouped; never what is computed):
    per_example  one forward/backward per example (the reference loop)
    padded       length-sorted micro-batches of `micro_batch_size`, right-padded by default: every real token
                 keeps its unpadded position and no pad precedes it, so the result is exact for every method
                 without relying on masking (left padding is also supported and exact through the S0 pad fix)
    packed       length-sorted micro-batches filled up to `max_tokens` tokens (padded rows, one sequence per row;
                 true varlen packing through cu_seqlens needs fla + flash-attention and is not used)
Both batched modes keep every micro-batch within `max_tokens` padded tokens, so memory is bounded by tokens;
`max_tokens=None` ("auto") measures the memory per token on CUDA and fills the free memory (resolve_max_tokens).

The model stays in eval mode (no dropout, and FalconH1 never takes its fused training path that ignores S0);
only the adapter's tensors receive gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from s0.adapters.base import Adapter
from s0.seeding import forked_rng
from s0.tasks.base import strip_thinking


@dataclasses.dataclass
class TrainExample:
    prompt_ids: list[int]
    completion_ids: list[int]


@dataclasses.dataclass
class TrainResult:
    losses: list[float]  # per step: (1/N) sum_i CE_i, before the update
    objectives: list[float]  # per step: loss + L2 term
    state_norms: list[float]  # per step, after the update: sqrt(sum ||S||^2) over trainable tensors
    grad_norms: list[float]  # per step, before clipping
    layer_norms: list[dict[str, float]]  # per step, after the update: each tensor's norm
    seconds: float
    steps: int
    n_examples: int
    n_completion_tokens: int
    # tokens per micro-batch and where the bound came from (configured, or measured from the device's memory)
    token_budget: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_OPEN_FENCE = re.compile(r"^```python[ \t]*\n?")
_CLOSE_FENCE = re.compile(r"\n?```\s*$")


def clean_target(completion: str) -> str:
    """protocol.train_target=clean: the verified completion with thinking removed, a leading ```python and a
    trailing ``` fence removed, and outer whitespace stripped (the authors' targets: experiments/state_tuning.py
    with experiments/state_peft/common.py strip_generation_artifacts(remove_code_fences=True))."""
    text = strip_thinking(completion).strip()
    return _CLOSE_FENCE.sub("", _OPEN_FENCE.sub("", text)).strip()


def encode_pair(
    tokenizer: Any,
    prompt_text: str,
    completion_text: str,
    max_length: int | None = None,
    add_eos: bool = False,
    clean: bool = False,
) -> TrainExample:
    """Tokenise prompt and completion separately (the loss boundary stays exact). `clean` trains on
    clean_target(completion) instead of the raw text; `add_eos` appends EOS (the protocol says which). Over
    `max_length`, the completion is cut at the end; if the prompt leaves no room, it is cut at the start to keep
    one token."""
    if clean:
        completion_text = clean_target(completion_text)
    p = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    c = list(tokenizer(completion_text, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        c.append(tokenizer.eos_token_id)
    if max_length is not None and len(p) + len(c) > max_length:
        if len(p) >= max_length:
            p = p[len(p) - max_length + 1 :]
        c = c[: max_length - len(p)]
    return TrainExample(p, c)


def make_batches(
    examples: list[TrainExample], batching: str, micro_batch_size: int = 8, max_tokens: int = 4096
) -> list[list[int]]:
    """Indices of the examples in each forward pass.

    Both batched modes sort by length and bound every micro-batch by `max_tokens` padded tokens (rows x longest
    row), because activation memory grows with tokens, not with the count of sequences (issue 13: 8 x 1,541 tokens
    may not fit a 24 GiB card); padded also caps the count at `micro_batch_size`. A sequence longer than the
    budget gets a micro-batch of its own."""
    if batching == "per_example":
        return [[i] for i in range(len(examples))]
    if batching not in ("padded", "packed"):
        raise ValueError(f"batching must be per_example, padded or packed, not '{batching}'")
    order = sorted(range(len(examples)), key=lambda i: _length(examples[i]))
    rows = micro_batch_size if batching == "padded" else len(examples)
    batches: list[list[int]] = [[]]
    for i in order:  # sorted ascending, so the row length of a bin is its last example's length
        b = batches[-1]
        if b and (len(b) >= rows or _length(examples[i]) * (len(b) + 1) > max_tokens):
            batches.append([])
        batches[-1].append(i)
    return batches


def _length(e: TrainExample) -> int:
    return len(e.prompt_ids) + len(e.completion_ids)


# max_tokens=None ("auto") on the CPU: memory is not what limits a CPU run, so the former fixed default.
CPU_MAX_TOKENS = 4096
# Share of the free device memory the micro-batches may fill; the rest absorbs what one probe does not show
# (allocator fragmentation, optimizer state, a longer row's attention workspace).
MEMORY_SAFETY = 0.8


def available_bytes(device: torch.device) -> int:
    """Bytes this process can still allocate on `device`: the free device memory plus what torch's allocator holds
    unused, within a per-process cap (torch.cuda.set_per_process_memory_fraction)."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    avail = free + torch.cuda.memory_reserved(device) - allocated
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _: 1.0)(device)
    return int(min(avail, fraction * total - allocated))


def probe_bytes_per_token(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
) -> float:
    """Peak memory of one forward + backward of `batch` above what was allocated before, per padded token."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    completion_ce_sum(model, batch).backward()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / batch["input_ids"].numel()


def resolve_max_tokens(
    max_tokens: int | str | None,
    model: torch.nn.Module,
    examples: list[TrainExample],
    device: torch.device,
    collate_fn: Callable[[list[TrainExample]], dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """The token budget per micro-batch and where it came from.

    An int is a configured cap, used as given. None or "auto": on CUDA, one forward + backward of the longest
    example (which has to fit anyway) measures the memory per token, and the budget fills `MEMORY_SAFETY` of the
    memory still available; on the CPU, `CPU_MAX_TOKENS`. If the longest example alone does not fit (the probe
    runs out of memory or needs more than the safe share), `checkpointing` is true and the memory per token is
    measured under `layer_checkpointing`, which `train` then applies. The caller has the adapter active, in train
    mode."""
    if max_tokens not in (None, "auto"):
        return {"max_tokens": int(max_tokens), "source": "configured", "checkpointing": False}
    if device.type != "cuda":
        return {"max_tokens": CPU_MAX_TOKENS, "source": "auto: cpu default", "checkpointing": False}
    longest = max(examples, key=_length)
    batch = collate_fn([longest])
    avail = available_bytes(device)
    try:
        per_token = probe_bytes_per_token(model, batch, device)
    except torch.OutOfMemoryError:
        per_token = None
    _drop_grads(model)
    checkpointing = per_token is None or per_token * _length(longest) > MEMORY_SAFETY * avail
    if checkpointing:  # the longest example alone does not fit: recompute each layer in the backward instead
        torch.cuda.empty_cache()
        with layer_checkpointing(model):
            per_token = probe_bytes_per_token(model, batch, device)
        _drop_grads(model)
    budget = max(_length(longest), int(MEMORY_SAFETY * avail / max(per_token, 1.0)))
    return {
        "max_tokens": budget,
        "source": "auto: measured",
        "checkpointing": checkpointing,
        "bytes_per_token": per_token,
        "available_gib": avail / 2**30,
        "safety": MEMORY_SAFETY,
        "probe_tokens": _length(longest),
    }


def _drop_grads(model: torch.nn.Module) -> None:
    """A probe's gradient is not part of any step (S0 tensors live outside the model: the first zero_grad)."""
    for p in model.parameters():
        p.grad = None


def collate(
    examples: list[TrainExample], pad_id: int, padding_side: str = "right", device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (B, L); `predict` (B, L) bool marks positions whose next token is a completion
    token (the logits kept); `target` (B, L) holds that next token."""
    length = max(len(e.prompt_ids) + len(e.completion_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    predict = torch.zeros_like(ids, dtype=torch.bool)
    for row, e in enumerate(examples):
        seq = e.prompt_ids + e.completion_ids
        start = 0 if padding_side == "right" else length - len(seq)
        ids[row, start : start + len(seq)] = torch.tensor(seq)
        mask[row, start : start + len(seq)] = 1
        # logits at position t predict token t+1: completion tokens sit at P..P+C-1, so predict at P-1..P+C-2
        p = start + len(e.prompt_ids)
        predict[row, p - 1 : p - 1 + len(e.completion_ids)] = True
    target = torch.roll(ids, shifts=-1, dims=1)
    return {
        k: v.to(device)
        for k, v in dict(input_ids=ids, attention_mask=mask, predict=predict, target=target).items()
    }


@contextlib.contextmanager
def layer_checkpointing(model: torch.nn.Module) -> Iterator[int]:
    """Gradient checkpointing per decoder layer, whatever `model.training` says (moved from benchmarks.common).

    transformers only checkpoints in train mode, but training keeps the model in eval mode (no dropout, and
    FalconH1 must not take its fused path that drops S0), so this wraps each layer's forward with non-reentrant
    `torch.utils.checkpoint` instead. The S0 hooks keep a stack per mixer, so recomputation re-injects correctly.
    Layers already wrapped (a nested call) are left alone. Yields the number of layers wrapped here; restores
    their forwards on exit."""
    from torch.utils.checkpoint import checkpoint

    # the decoder's ModuleList, also under a PEFT wrapper (base_model.model.model.layers)
    lists = [
        m
        for n, m in model.named_modules()
        if n.split(".")[-1] == "layers" and isinstance(m, torch.nn.ModuleList)
    ]
    layers = [layer for layer in (lists[0] if lists else []) if not getattr(layer, "_s0_checkpointed", False)]
    originals = []
    for layer in layers:
        fwd = layer.forward
        originals.append(fwd)
        # The layer's own name for the cache (`cache` from transformers 5.24, `past_key_values` before): nulling
        # the other name leaves the cache in place, and the recomputation then writes it a second time.
        cache_arg = "cache" if "cache" in inspect.signature(fwd).parameters else "past_key_values"

        def wrapped(*args: Any, _fwd: Callable = fwd, _cache: str = cache_arg, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                # As transformers does under checkpointing: a cache would be written twice (forward and recompute).
                kwargs.update({_cache: None, "use_cache": False})
                return checkpoint(_fwd, *args, use_reentrant=False, **kwargs)
            return _fwd(*args, **kwargs)

        layer.forward = wrapped
        layer._s0_checkpointed = True
    try:
        yield len(layers)
    finally:
        for layer, fwd in zip(layers, originals):
            layer.forward = fwd
            del layer._s0_checkpointed


def completion_ce_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over the batch's examples of each example's mean completion CE (a scalar)."""
    predict = batch["predict"]
    # A boolean logits_to_keep projects only the completion positions onto the vocabulary: (n_kept, V).
    # use_cache=False: with the config's default a DynamicCache is built in every training forward (unused).
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=predict,
        use_cache=False,
    )
    logits = out.logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, batch["target"][predict][:, None]).squeeze(-1)
    rows = torch.arange(predict.shape[0], device=predict.device)[:, None].expand_as(predict)[predict]
    per_row = torch.zeros(predict.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
    return (per_row / predict.sum(dim=1).clamp_min(1)).sum()


def train(
    adapter: Adapter,
    examples: list[TrainExample],
    steps: int,
    lr: float,
    l2: float = 0.0,
    grad_clip: float = 1.0,
    batching: str = "padded",
    seed: int = 0,
    progress: bool = True,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    micro_batch_size: int = 8,
    max_tokens: int | str | None = 4096,
    padding_side: str = "right",
    pad_token_id: int = 0,
) -> TrainResult:
    """Train `adapter.parameters()` in place for `steps` full passes over `examples`; returns the log.

    `max_tokens` bounds each micro-batch's padded tokens; None or "auto" derives it from the device's free memory
    (`resolve_max_tokens`); the budget used is in `result.token_budget`."""
    if not examples:
        raise ValueError("no training examples")
    if any(not e.completion_ids or not e.prompt_ids for e in examples):
        raise ValueError("every example needs at least one prompt token and one completion token")
    from tqdm.auto import tqdm

    model = adapter.model
    params = adapter.parameters()
    named = adapter.named_parameters()
    device = next(model.parameters()).device
    n = len(examples)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    if batching == "per_example":  # one example per pass: no budget to choose (and no probe to run)
        budget: dict[str, Any] = {"max_tokens": None, "source": "per_example", "checkpointing": False}
    else:
        with forked_rng(device, seed), adapter.active(), adapter.train_mode():
            budget = resolve_max_tokens(
                max_tokens, model, examples, device, lambda b: collate(b, pad_token_id, padding_side, device)
            )
    batches = [
        collate([examples[i] for i in b], pad_token_id, padding_side, device)
        for b in make_batches(examples, batching, micro_batch_size, budget["max_tokens"] or 0)
    ]
    budget["micro_batches"] = len(batches)
    budget["largest_micro_batch_tokens"] = max(b["input_ids"].numel() for b in batches)
    result = TrainResult(
        [], [], [], [], [], 0.0, steps, n, sum(len(e.completion_ids) for e in examples), budget
    )
    ckpt = layer_checkpointing(model) if budget["checkpointing"] else contextlib.nullcontext()
    with forked_rng(device, seed), adapter.active(), adapter.train_mode(), ckpt:
        opt = torch.optim.Adam(params, lr=lr)
        bar = tqdm(range(steps), disable=not progress, desc=f"train {adapter.method}", leave=False)
        for step in bar:
            opt.zero_grad(set_to_none=True)
            ce_total = 0.0
            for batch in batches:
                loss = completion_ce_sum(model, batch) / n
                loss.backward()
                ce_total += loss.item()
            reg_value = 0.0
            if l2 > 0:
                reg = l2 * sum(p.pow(2).sum() for p in params)
                reg.backward()
                reg_value = reg.item()
            grad_norm = _clip(params, grad_clip)
            opt.step()
            with torch.no_grad():
                layer_norms = {k: float(torch.linalg.vector_norm(v)) for k, v in named.items()}
            state_norm = math.sqrt(sum(v * v for v in layer_norms.values()))
            result.losses.append(ce_total)
            result.objectives.append(ce_total + reg_value)
            result.grad_norms.append(grad_norm)
            result.state_norms.append(state_norm)
            result.layer_norms.append(layer_norms)
            bar.set_postfix(loss=f"{ce_total:.4f}", norm=f"{state_norm:.3g}")
            if log_fn is not None:
                log_fn(
                    {
                        "step": step + 1,
                        "loss": ce_total,
                        "objective": ce_total + reg_value,
                        "l2_term": reg_value,
                        "grad_norm": grad_norm,
                        "state_norm": state_norm,
                    }
                )
    model.train(was_training)
    result.seconds = time.perf_counter() - start
    return result


def _clip(params: list[torch.Tensor], max_norm: float) -> float:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        raise RuntimeError("no trainable tensor received a gradient: the adapter is not wired into the model")
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads])))
