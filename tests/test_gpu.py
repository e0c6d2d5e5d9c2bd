"""GPU tests on the real-size Qwen3.5-4B architecture (random weights, bf16). Run on a CUDA machine:

    pytest -m gpu tests/test_gpu.py -v -s         # each test 1-5 minutes on an H200 (benchmarks/gpu_run.sh: one step each)

Skipped cleanly without CUDA; CI (CPU) deselects them (`-m 'not gpu'` in pyproject). Sizes can be raised with
S0_GPU_PROMPTS / S0_GPU_TOKENS.

* batched greedy decoding through s0.generation.generate equals one-at-a-time decoding with S0 active, in fp32
  (the bf16 weights upcast, TF32 off in PyTorch): token-identical, and equal to the argmax of a PyTorch-kernel
  teacher-forced forward, at every position where that reference's top-2 logit gap exceeds a noise floor measured
  from the fla-vs-PyTorch logit difference (`SAFETY` x); it prints the measured noise, the decode path's own error
  and how many positions it checked, and needs half of them. A broken pad fix moves logits by 1e-2..5e-2 relative
  (PITFALLS) and flips tokens with clear margins, which this catches.
* S0 forward (and backward) through fla, the automatic route and PyTorch bf16 against an fp32 reference of the
  same weights: every route within 2x PyTorch bf16's own error, padded and not; gradients reach S0; fla's own
  backward either refuses (Hopper with triton < 3.7.1) or meets the same bound.
* decode overhead sanity: S0 active and merged LoRA decode within 10% of base; unmerged LoRA is not faster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics

import pytest
import torch

pytestmark = pytest.mark.gpu

PROMPTS = int(os.environ.get("S0_GPU_PROMPTS", "8"))
TOKENS = int(os.environ.get("S0_GPU_TOKENS", "16"))
# The batched == one-at-a-time test's noise floor is measured, not assumed: SAFETY x the largest |logit difference|
# of PyTorch's teacher-forced fp32 forward (TF32 off) from the decoding route's (fla on CUDA: Triton dots in TF32
# even in fp32) and from PyTorch's recurrent decoding. A top-2 gap flips only below twice the error; the other 2x
# is margin. MIN_FLOOR: a lower bound, above fp32 reduction-order noise (~1e-5 on the tiny models).
SAFETY = 4.0
MIN_FLOOR = 1e-4


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


@contextlib.contextmanager
def _fp32_without_tf32():
    """PyTorch's fp32 matmuls and convolutions in full fp32 (cuDNN convolutions default to TF32). fla's Triton
    kernels are not governed by these flags (tl.dot on fp32 defaults to TF32): their error is what the test
    measures instead of assuming."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _teacher_forced(model, ids: torch.Tensor, n: int, route: str) -> torch.Tensor:
    """fp32 logits predicting the last `n` tokens of `ids` (1, T), in one forward with GatedDeltaNet on `route`."""
    from s0.adapters import injection as inj

    inj.set_route("gdn", route)
    with torch.no_grad():
        return model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1].float()


def test_batched_greedy_equals_one_at_a_time_with_s0_in_fp32(qwen4b):
    """Batched greedy decoding (S0 active) gives the one-at-a-time tokens at every position where the reference's
    top-2 logit gap exceeds a noise floor measured here, all in fp32 (the bf16 weights upcast, TF32 off in PyTorch).

    The reference logits are a teacher-forced forward over the one-at-a-time tokens on the PyTorch GatedDeltaNet
    kernels. The noise floor is `SAFETY` x the largest |logit difference| of that forward from (a) the same forward
    on the route decoding uses (fla on CUDA, whose Triton dots run in TF32) and (b) PyTorch's own recurrent
    decoding of the same tokens (chunked vs recurrent fp32 sums): a token can flip only where the gap is under
    twice the error, and the factor 2 more is margin. Also measured, and printed: the decode
    path's own logits of the same tokens (s0.decode teacher-forced) against the reference, so a failure says
    whether it is kernel noise (decode error ~ kernel noise) or a real decode-path mismatch (far above it).
    Checks, at positions above the floor: the one-at-a-time token is the reference's argmax (the decode path
    decodes what the model computes), and batched == one-at-a-time, up to a prompt's first divergence (after it
    the prefixes differ; one on a near-tie ends that prompt without a verdict). Most positions must be checked."""
    from benchmarks.decode_loop import IdTokenizer
    from s0.decode import decode
    from s0.generation import GenerationSpec, generate

    model, s0, choice = qwen4b
    fast_route = choice["routes"]["gdn"]
    seqs = _prompts(model.config.vocab_size, PROMPTS)
    tok = IdTokenizer(seqs, model.config.vocab_size)
    texts = tok.texts()
    per_prompt = []  # (batched tokens, single tokens, reference top-2, kernel noise, |decode - reference| per pos)
    model.to(torch.float32)
    try:
        with _fp32_without_tf32(), s0.active():
            spec = dict(max_new_tokens=TOKENS)
            batched = generate(
                model, tok, texts, GenerationSpec(**spec, batch_size=len(texts)), progress=False
            )
            single = generate(model, tok, texts, GenerationSpec(**spec, batch_size=1), progress=False)
            for i, (b, s) in enumerate(zip(batched, single)):
                bt, st = [int(x) for x in b[0].split()], [int(x) for x in s[0].split()]
                assert len(bt) == len(st) == TOKENS
                ids = torch.tensor([seqs[i] + st], device="cuda")
                prompt = torch.tensor([seqs[i]], device="cuda")
                # s0.decode teacher-forced on these tokens, returning each step's logits
                forced = dict(forced=torch.tensor([st]), keep_scores=True)
                ref = _teacher_forced(model, ids, TOKENS, "torch")
                # two correct fp32 computations of the same logits: chunked (one forward) and recurrent (decoding)
                ref_dec = decode(model, prompt, torch.ones_like(prompt), TOKENS, [], tok.pad_token_id,
                                 gdn_decode="native", **forced).scores[0]  # fmt: skip
                fast = _teacher_forced(model, ids, TOKENS, fast_route)  # leaves the route as decoding had it
                dec = decode(model, prompt, torch.ones_like(prompt), TOKENS, [], tok.pad_token_id, **forced)
                noise = max((fast - ref).abs().max().item(), (ref_dec - ref).abs().max().item())
                per_prompt.append((bt, st, ref.topk(2, dim=-1), noise,
                                   (dec.scores[0] - ref).abs().amax(dim=-1).tolist()))  # fmt: skip
                del ref, ref_dec, fast, dec
    finally:
        model.to(torch.bfloat16)
    kernel_noise = max(p[3] for p in per_prompt)
    floor = max(SAFETY * kernel_noise, MIN_FLOOR)
    decode_err = max(max(p[4]) for p in per_prompt)
    checked, ties, ended_on_tie, not_argmax, mismatches = 0, 0, 0, [], []
    for i, (bt, st, top, _, dec_err) in enumerate(per_prompt):
        gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
        for j in range(TOKENS):
            if gaps[j] <= floor:
                ties += 1
                if bt[j] != st[j]:
                    ended_on_tie += 1
                    break
                continue
            checked += 1
            if int(top.indices[j, 0]) != st[j]:
                not_argmax.append((i, j, round(gaps[j], 5), round(dec_err[j], 5)))
            if bt[j] != st[j]:
                mismatches.append((i, j, round(gaps[j], 5)))
                break
    total = PROMPTS * TOKENS
    print(f"fp32, TF32 off in PyTorch; gdn route for decoding: {fast_route}\n"
          f"  kernel noise, max |logit difference| from the torch teacher-forced forward of the {fast_route} one "
          f"and of torch's recurrent decoding: {kernel_noise:.3g} -> floor "
          f"{floor:.3g} ({SAFETY:g}x, at least {MIN_FLOOR:g})\n"
          f"  decode path vs torch teacher-forced, max |logit difference|: {decode_err:.3g}\n"
          f"  checked {checked} of {total} positions (reference top-2 gap > floor); {ties} near-ties, "
          f"{ended_on_tie} prompt(s) diverged on one\n"
          f"  one-at-a-time token not the reference argmax (prompt, token, gap, |decode - ref|): {not_argmax}\n"
          f"  batched != one-at-a-time (prompt, token, gap): {mismatches}")  # fmt: skip
    # decoding's argmax can differ from the reference's only where its error reaches gap / 2 > floor / 2
    verdict = "a real decode-path mismatch" if decode_err > floor else "decode-kernel noise above the floor"
    assert not not_argmax, (
        f"{len(not_argmax)} position(s) where decoding chose a token the PyTorch fp32 forward of the same prefix "
        f"does not rank first (gap > floor {floor:.3g}): decode-path logits are up to {decode_err:.3g} from that "
        f"forward, kernel noise {kernel_noise:.3g}: {verdict}"
    )
    assert not mismatches, f"batched != one-at-a-time above the noise floor at {mismatches}"
    # Random weights give small top-2 gaps: on the H200 (2026-11-30) fla's TF32 noise 0.029 set the floor at 0.116
    # and 75 of 128 positions were above it. Half the positions keep the test from passing on near-ties alone.
    assert checked >= 0.5 * total, f"only {checked} of {total} positions could be checked (floor {floor:.3g})"


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
