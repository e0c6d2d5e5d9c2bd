"""Run-time checks (s0/run/preflight.py): each passes on a working path and stops a broken one.

The broken paths are the silent failures the checks exist for: an adapter that is never wired in, a generation
path that drops the adapter (zeroed) or applies it differently from training (reversed), and a thinking model
prompted without the no-thinking block. Tiny models use initializer_range 0.2 so that an adapter moves the
argmax (at the default 0.02 the tied embedding dominates and nothing a state does changes a greedy token).
"""

from __future__ import annotations

import json

import pytest
import torch

from s0.adapters import build_adapter
from s0.generation import GenerationSpec
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from s0.run import preflight
from s0.run.preflight import PreflightError, check_generation, check_logit_change, check_prompts
from tests.test_injection import PROMPTS

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = GenerationSpec(max_new_tokens=8, batch_size=4)


def strong_model(family: str):
    return build_model(family, {**TINY_ARCH[family], "initializer_range": 0.2}, seed=3)


def randomized(adapter, scale: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return adapter


def base_argmax(model, tok) -> list[int]:
    with torch.no_grad():
        return [int(model(**tok(p, return_tensors="pt")).logits[0, -1].argmax()) for p in PROMPTS[:4]]


@pytest.fixture
def tok():
    return tiny_tokenizer()


# ------------------------------------------------------------------------------------------------ prompts
def test_thinking_prompts_need_the_no_thinking_block(tok):
    messages = [{"role": "user", "content": "Write add(a, b)."}]
    good = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    thinking = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert check_prompts([good, good], tok) == {"thinking_template": True, "no_thinking": True, "checked": 2}
    with pytest.raises(PreflightError, match=r"1 of 2 prompts .* no-thinking form"):
        check_prompts([good, thinking], tok)


def test_templates_without_thinking_are_not_held_to_it(tok):
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert check_prompts(["plain prompt"], tok)["thinking_template"] is False


# ------------------------------------------------------------------------------------------ logit change
@pytest.mark.parametrize(("family", "method"), [("qwen3_5", "s0"), ("falcon_h1", "s0"),
                                                ("qwen3_5", "state_offset"), ("qwen3_5", "lora")])  # fmt: skip
def test_wired_adapters_change_the_logits(family, method, tok):
    model = strong_model(family)
    adapter = randomized(build_adapter(method, model, alpha=1.0, seed=0), scale=0.3)
    report = check_logit_change(adapter, tok, PROMPTS, SPEC)
    assert report["logit_change"] > 1e-3
    adapter.remove()


def test_an_adapter_that_is_never_wired_in_is_refused(tok, monkeypatch):
    model = strong_model("qwen3_5")
    adapter = randomized(build_adapter("s0", model, alpha=1.0))
    monkeypatch.setattr(type(adapter), "activate", lambda self: self)  # active in name only
    with pytest.raises(PreflightError, match="changes no logit"):
        check_logit_change(adapter, tok, PROMPTS, SPEC)


def test_an_exactly_zero_adapter_is_not_asked_to_change_anything(tok):
    adapter = build_adapter("s0", strong_model("qwen3_5"), alpha=1.0)
    assert check_logit_change(adapter, tok, PROMPTS, SPEC)["logit_change"].startswith("skipped")


# -------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize(("family", "method"), [("qwen3_5", "s0"), ("falcon_h1", "s0"),
                                                ("qwen3_5", "state_offset"), ("qwen3_5", "lora"),
                                                ("qwen2", "prefix")])  # fmt: skip
def test_generation_sees_the_adapter(family, method, tok):
    model = strong_model(family)
    # Mamba-2's state needs a larger scale to move a token (its readout is smaller), LoRA a smaller one
    scale = {"falcon_h1": 10.0}.get(family, 0.3 if method == "lora" else 1.0)
    adapter = randomized(build_adapter(method, model, alpha=1.0, seed=0), scale=scale)
    with adapter.inactive():
        base = base_argmax(adapter.model, tok)
    with adapter.active():
        adapted = base_argmax(adapter.model, tok)
        report = check_generation(adapter.model, tok, PROMPTS, SPEC)
    # the check is only a check if the adapter moves a greedy token on these prompts
    assert adapted != base
    assert report["tokens_agree"] >= 4 and report["near_ties"] == 0
    adapter.remove()


@pytest.mark.parametrize("breakage", ["zeroed", "reversed"])
def test_a_generation_path_that_loses_or_flips_the_state_is_refused(breakage, tok, monkeypatch):
    model = strong_model("qwen3_5")
    adapter = randomized(build_adapter("s0", model, alpha=1.0))
    real = preflight.generate_ids

    def broken_generate(*args, **kwargs):
        if breakage == "zeroed":
            with adapter.inactive():
                return real(*args, **kwargs)
        with torch.no_grad():
            for p in adapter.parameters():
                p.neg_()
        try:
            return real(*args, **kwargs)
        finally:
            with torch.no_grad():
                for p in adapter.parameters():
                    p.neg_()

    monkeypatch.setattr(preflight, "generate_ids", broken_generate)
    with adapter.active(), pytest.raises(PreflightError, match="generation disagrees with a plain forward"):
        check_generation(model, tok, PROMPTS, SPEC)


def test_near_ties_within_the_bf16_noise_are_counted_not_failed():
    assert preflight.tie_tolerance(torch.float32) < 1e-3 < preflight.tie_tolerance(torch.bfloat16)


# ------------------------------------------------------------------------------------------- in the runner
def test_runs_record_their_checks_and_a_broken_adapter_stops_the_run(compose, tmp_path, monkeypatch):
    from s0.run.pipeline import PipelineError, run_all
    from tests.test_pipeline import no_run_dirs, planned

    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0")
    run_all(runs, cfg, progress=False)
    prov = json.loads((tmp_path / "runs" / runs[0].run_id / "provenance.json").read_text())
    checks = prov["preflight"]
    assert checks["adapter"]["logit_change"] > 0
    assert checks["generation"]["probes"] >= 1
    assert checks["eval_prompts"]["no_thinking"] is True
    assert prov["state_injection"] == {
        "gdn": "GDN: the chunk kernel's initial_state argument (fla or PyTorch)"
    }

    from s0.adapters.state import StateAdapter

    # an adapter that cannot be switched off: the check's "off" forward still carries it, so no logit moves
    monkeypatch.setattr(StateAdapter, "deactivate", lambda self: self)
    cfg, runs = planned(compose, tmp_path / "broken", "experiment=main_qwen", "seed=7", "arm=s0")
    with pytest.raises(PipelineError, match=r"preflight check failed .* changes no logit"):
        run_all(runs, cfg, progress=False)
    assert not (tmp_path / "broken" / "runs" / runs[0].run_id / "done").exists()
    assert not no_run_dirs(tmp_path / "broken")  # the trained adapter is kept for a rerun


def test_long_prompts_are_cut_as_the_run_cuts_them(tok):
    """With prompts longer than max_length - max_new_tokens, the check must generate from the same left-cut
    prompt the run generates from (its own two-token budget would otherwise keep more of the prompt)."""
    model = strong_model("qwen3_5")
    adapter = randomized(build_adapter("s0", model, alpha=1.0))
    # every prompt is cut to its last 8 tokens (20 - 12)
    spec = GenerationSpec(max_new_tokens=12, max_length=20, batch_size=4)
    prompts = [f"def f{i}(x):\n    return x * {i} + {i * i} - x ** {i}" for i in range(4)]
    assert min(len(tok(p)["input_ids"]) for p in prompts) > 20
    with adapter.active():
        report = check_generation(model, tok, prompts, spec)
    assert report["tokens_agree"] >= 4 and report["near_ties"] == 0
