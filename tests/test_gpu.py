"""GPU tests on the real-size Qwen3.5-4B architecture (random weights, bf16). Run on a CUDA machine:

    pytest -m gpu tests/test_gpu.py -v            # about 2-4 minutes on an H100

Skipped cleanly without CUDA; CI (CPU) deselects them (`-m 'not gpu'` in pyproject). Sizes can be raised with
S0_GPU_PROMPTS / S0_GPU_TOKENS.

* batched greedy decoding through s0.generation.generate equals one-at-a-time decoding with S0 active, in fp32
  (the bf16 weights upcast): token-identical at every position where the reference's top-2 logit gap exceeds
  `NOISE_FLOOR`; the test prints how many positions it checked and needs 80% of them. A broken pad fix moves
  logits by 1e-2..5e-2 relative (PITFALLS) and flips tokens with clear margins, which this catches.
* S0 forward (and backward) through fla, the automatic route and PyTorch bf16 against an fp32 reference of the
  same weights: every route within 2x PyTorch bf16's own error, padded and not; gradients reach S0; fla's own
  backward either refuses (Hopper with triton < 3.7.1) or meets the same bound.
* decode overhead sanity: S0 active and merged LoRA decode within 10% of base; unmerged LoRA is not faster.
"""

from __future__ import annotations

import functools
import os
import statistics

import pytest
import torch

pytestmark = pytest.mark.gpu

PROMPTS = int(os.environ.get("S0_GPU_PROMPTS", "20"))
TOKENS = int(os.environ.get("S0_GPU_TOKENS", "16"))
# fp32 logits of batched and one-at-a-time decoding differ by reduction order only (~1e-5 for the 4B model); a
# reference top-2 gap above this cannot be flipped by that, so a different token there is a real mismatch.
NOISE_FLOOR = 1e-3


def _need_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.fixture(scope="module")
def qwen4b():
    _need_cuda()
    from benchmarks.common import build
    from s0.adapters import S0Adapter
    from s0.backends import select_backends

    choice = select_backends(device="cuda")
    model = build("qwen3_5_4b", False, torch.device("cuda"))
    model.generation_config.eos_token_id = None
    s0 = S0Adapter(model, alpha=0.07)
    from benchmarks.common import fill_random

    fill_random(s0.parameters(), 1.0, 0)
    yield model, s0, choice
    del model, s0
    torch.cuda.empty_cache()


@pytest.fixture(autouse=True)
def restore_routes():
    from s0.adapters import injection as inj

    before = inj.get_routes()
    yield
    for family, route in before.items():
        inj.set_route(family, route)


def _prompts(vocab: int, n: int) -> list[list[int]]:
    from benchmarks.common import eval_prompt_lengths, random_ids

    return random_ids(eval_prompt_lengths(n), vocab, seed=1)


def test_batched_greedy_equals_one_at_a_time_with_s0_in_fp32(qwen4b):
    """Batched greedy decoding (S0 active) gives the one-at-a-time tokens at every position where the reference's
    top-2 logit gap exceeds `NOISE_FLOOR`, compared in fp32 (the same weights upcast), so bf16 rounding cannot
    decide it. Positions are compared up to a prompt's first divergence (after it the prefixes differ); one on a
    near-tie ends that prompt without a verdict. The test prints how many positions it checked and needs most."""
    from benchmarks.decode_loop import IdTokenizer
    from s0.generation import GenerationSpec, generate

    model, s0, _ = qwen4b
    seqs = _prompts(model.config.vocab_size, PROMPTS)
    tok = IdTokenizer(seqs, model.config.vocab_size)
    texts = tok.texts()
    checked, ties, ended_on_tie, mismatches = 0, 0, 0, []
    model.to(torch.float32)
    try:
        with s0.active():
            spec = dict(max_new_tokens=TOKENS)
            batched = generate(
                model, tok, texts, GenerationSpec(**spec, batch_size=len(texts)), progress=False
            )
            single = generate(model, tok, texts, GenerationSpec(**spec, batch_size=1), progress=False)
            for i, (b, s) in enumerate(zip(batched, single)):
                bt, st = [int(x) for x in b[0].split()], [int(x) for x in s[0].split()]
                assert len(bt) == len(st) == TOKENS
                # the reference's logits at every generated position, teacher-forced in one fp32 forward
                ids = torch.tensor([seqs[i] + st], device="cuda")
                with torch.no_grad():
                    logits = model(input_ids=ids, logits_to_keep=TOKENS + 1).logits[0, :-1].float()
                top = logits.topk(2, dim=-1)
                gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
                for j in range(TOKENS):
                    if gaps[j] <= NOISE_FLOOR:
                        ties += 1
                        if bt[j] != st[j]:
                            ended_on_tie += 1
                            break
                        continue
                    checked += 1
                    assert int(top.indices[j, 0]) == st[j], (
                        f"prompt {i} token {j}: reference is not its own argmax"
                    )
                    if bt[j] != st[j]:
                        mismatches.append((i, j, round(gaps[j], 4)))
                        break
    finally:
        model.to(torch.bfloat16)
    total = PROMPTS * TOKENS
    print(f"fp32: checked {checked} of {total} positions (reference top-2 gap > {NOISE_FLOOR}); {ties} near-ties, "
          f"{ended_on_tie} prompt(s) diverged on one; mismatches (prompt, token, gap): {mismatches}")  # fmt: skip
    assert not mismatches, f"batched != one-at-a-time above the noise floor at {mismatches}"
    assert checked >= 0.8 * total, f"only {checked} of {total} positions could be checked"


def test_s0_fla_vs_torch_within_torchs_own_bf16_error(qwen4b):
    """fla (and the automatically chosen route) against PyTorch, judged by the error PyTorch's own bf16 path has
    against an fp32 reference of the same weights (issue 13: a fixed 0.03 failed fla at 0.060 while PyTorch bf16
    was 0.060 from fp32 itself): logits and S0 gradients of each route within 2x that error (+1e-3)."""
    from benchmarks.kernel_parity import rel, run_case
    from s0.adapters import injection as inj
    from s0.backends import fla_backward_refuses

    model, s0, choice = qwen4b
    seqs = _prompts(model.config.vocab_size, 3)
    k = 16
    targets = torch.randint(
        1, model.config.vocab_size, (len(seqs), k), generator=torch.Generator().manual_seed(2)
    ).cuda()
    dev = torch.device("cuda")
    for padded in (False, True):
        case = functools.partial(run_case, model, s0, seqs, targets, k, padded)
        inj.set_route("gdn", "torch")
        torch16 = case(True, dev)
        inj.set_route("gdn", choice["routes"]["gdn"])
        routes = {"auto": case(True, dev)}
        if choice["gdn"] == "fla":
            inj.set_route("gdn", "native")
            routes["fla_forward"] = case(False, dev)
            if fla_backward_refuses(dev):
                with pytest.raises(Exception, match=r"(?i)triton|hopper|tilelang"):
                    case(True, dev)
            else:
                routes["fla"] = case(True, dev)
        model.to(torch.float32)
        inj.set_route("gdn", "torch")
        try:
            ref = case(True, dev)
        finally:
            model.to(torch.bfloat16)
        assert ref["grad"].abs().max() > 0, "S0 received no gradient: not wired in"
        floor = {key: rel(torch16[key], ref[key]) for key in ("logits", "grad")}
        print(f"padded={padded}: torch bf16 vs fp32: logits {floor['logits']:.3g}, grad {floor['grad']:.3g}")
        for name, r in routes.items():
            for key in ("logits", "grad") if "grad" in r else ("logits",):
                err = rel(r[key], ref[key])
                print(f"  {name} vs fp32 {key}: {err:.3g} (vs torch bf16: {rel(r[key], torch16[key]):.3g})")
                assert err <= 2 * floor[key] + 1e-3, f"{name} {key}: {err:.3g} > 2 x torch's bf16 error"


def test_decode_overhead_sanity(qwen4b):
    from benchmarks.decode_loop import StaticGreedyDecoder
    from benchmarks.overhead import config_contexts, step_time
    from s0.adapters import StateOffsetAdapter

    model, s0, _ = qwen4b
    offset = StateOffsetAdapter(model, alpha=0.07)
    contexts = config_contexts(model, s0, offset)
    seqs = _prompts(model.config.vocab_size, 8)
    seqs = [s[:100] for s in seqs]
    dec = StaticGreedyDecoder(model, len(seqs), 100 + 40)
    dev = torch.device("cuda")
    try:
        with torch.no_grad():
            step_time(dec, seqs, 4, True, dev)
        graph = True
    except Exception as err:  # graph capture unavailable: compare eager steps instead
        print(f"graph capture failed ({type(err).__name__}: {err}); eager timings")
        graph = False
    times: dict[str, list[float]] = {c: [] for c in ("base", "s0", "lora_unmerged", "lora_merged")}
    for _ in range(3):
        for cfg in times:
            with contexts[cfg](), torch.no_grad():
                times[cfg].append(step_time(dec, seqs, 24, graph, dev))
    med = {c: statistics.median(v) for c, v in times.items()}
    print({c: f"{v * 1e3:.2f} ms" for c, v in med.items()}, "graph" if graph else "eager")
    assert med["s0"] / med["base"] < 1.10
    assert med["lora_merged"] / med["base"] < 1.10
    assert med["lora_unmerged"] / med["base"] > 0.97
