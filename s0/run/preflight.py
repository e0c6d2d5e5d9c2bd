"""Run-time checks that stop a run before it records a number it cannot vouch for.

A test suite runs tiny models; a researcher runs real checkpoints on another machine with other library
versions. These checks run there, on the run's own model and prompts, cost a few forward passes, and either
pass (their findings go into `provenance.json`) or stop the run with one line:

    check_prompts(prompts, tokenizer)        # thinking models: every prompt ends in the no-thinking form
    check_logit_change(adapter, tokenizer, prompts, spec)   # the active adapter is wired into the model
    with adapter.active():
        check_generation(adapter.model, tokenizer, prompts, spec)
        # the first two greedy tokens equal the argmax of plain forwards: the generation path (cache, padding,
        # engine) sees what training saw

No Hydra here: the pipeline calls these with plain arguments.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from s0.generation import GenerationSpec, encode_prompts, eos_ids, generate_ids, resolve_engine

# The empty think block Qwen3-style templates write with enable_thinking=False (paper Sec 4.1: no_thinking).
NO_THINKING_END = re.compile(r"<think>\s*</think>\s*$")
PROBES = 4  # prompts checked: enough that one near-tie cannot hide a broken path, few enough to be free
CHECKED_TOKENS = 2  # the first token tests prefill; the second, one cached decode step


class PreflightError(RuntimeError):
    """A run-time check failed; the message says what the run would have recorded wrongly."""


def is_thinking_template(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "<think>" in template or "enable_thinking" in template


def check_prompts(prompts: list[str], tokenizer: Any) -> dict[str, Any]:
    """Prompts of a thinking model must switch thinking off (an empty think block at the end)."""
    if not is_thinking_template(tokenizer):
        return {"thinking_template": False, "checked": len(prompts)}
    bad = [i for i, p in enumerate(prompts) if not NO_THINKING_END.search(p)]
    if bad:
        tail = prompts[bad[0]][-60:]
        raise PreflightError(
            f"{len(bad)} of {len(prompts)} prompts of a thinking model do not end in the no-thinking form "
            f"'<think>\\n\\n</think>\\n\\n' (prompt {bad[0]} ends {tail!r}); the protocol (paper Sec 4.1) needs "
            "enable_thinking=False: check the tokenizer's chat template"
        )
    return {"thinking_template": True, "no_thinking": True, "checked": len(prompts)}


def tie_tolerance(dtype: torch.dtype) -> float:
    """A top-2 logit gap below which batched and single forwards may legitimately disagree."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 0.25


def _forward_logits(model: torch.nn.Module, ids: list[int], keep: int = 0) -> torch.Tensor:
    """(positions, vocab) logits of one unpadded prompt, called as the training loop calls the model; `keep`
    > 0 keeps only the last `keep` positions (0 keeps all)."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    out = model(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), logits_to_keep=keep, use_cache=False
    )
    return out.logits[0].float()


@torch.no_grad()
def check_logit_change(
    adapter: Any, tokenizer: Any, prompts: list[str], spec: GenerationSpec
) -> dict[str, Any]:
    """The active adapter changes the logits of the first prompts, unless its tensors are exactly zero.

    Compared over every prompt position, where a state injected at t=0 acts most strongly; an adapter that is
    not wired in leaves every logit bit-identical.
    """
    if not adapter.parameters():
        return {"logit_change": "skipped: no trainable tensors"}
    if all(int(torch.count_nonzero(p)) == 0 for p in adapter.parameters()):
        return {"logit_change": "skipped: every adapter tensor is exactly zero"}
    probes = encode_prompts(tokenizer, prompts[:PROBES], spec)
    change = 0.0
    for ids in probes:  # one prompt at a time: full-vocabulary logits of a long prompt are large
        with adapter.inactive():
            off = _forward_logits(adapter.model, ids)
        with adapter.active():
            change = max(change, float((_forward_logits(adapter.model, ids) - off).abs().max()))
    if not change > 0:
        raise PreflightError(
            f"the {adapter.method} adapter is active but changes no logit on {len(probes)} evaluation prompts: "
            "it is not wired into the model, so evaluation would score the base model"
        )
    return {"logit_change": change}


@torch.no_grad()
def check_generation(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], spec: GenerationSpec
) -> dict[str, Any]:
    """The first tokens generated greedily, in one left-padded batch with the run's engine, equal the argmax of
    plain forwards of each prompt alone: with whatever adapter is active, generation sees what training saw.

    `spec` is the run's evaluation spec (engine, lengths); the check itself always decodes greedily.
    """
    probes = encode_prompts(tokenizer, prompts[:PROBES], spec)
    # the run's prompt budget kept (max_length shrinks with max_new_tokens): long prompts are cut as in the run
    greedy = dataclasses.replace(spec, max_new_tokens=CHECKED_TOKENS, do_sample=False, samples=1,
                                 max_length=spec.max_length - spec.max_new_tokens + CHECKED_TOKENS)  # fmt: skip
    generated = [rows[0] for rows in generate_ids(model, tokenizer, prompts[:PROBES], greedy, progress=False)]
    eos = set(eos_ids(model, tokenizer))
    tol = tie_tolerance(next(model.parameters()).dtype)
    agree = ties = 0
    for i, (ids, gen) in enumerate(zip(probes, generated)):
        prefix = list(ids)
        for step, token in enumerate(gen[:CHECKED_TOKENS]):
            logits = _forward_logits(model, prefix, keep=1)[-1]
            expected = int(logits.argmax())
            gap = float(logits[expected] - logits[token])
            if token == expected:
                agree += 1
            elif gap <= tol:
                ties += 1
            else:
                raise PreflightError(
                    f"generation disagrees with a plain forward: prompt {i}, token {step}: generated {token}, "
                    f"argmax {expected} (logit gap {gap:.3g} > {tol:g}); the generation path "
                    f"({resolve_engine(model, spec.engine)} engine, "
                    f"left-padded batch of {len(probes)}) does not see what training saw"
                )
            if token in eos:
                break
            prefix.append(token)
    return {
        "probes": len(probes),
        "tokens_agree": agree,
        "near_ties": ties,
        "tie_tolerance": tol,
        "engine": resolve_engine(model, spec.engine),  # the one that ran ("auto" resolves per device)
    }
