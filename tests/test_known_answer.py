"""Known-answer end-to-end test (issue 10): a teacher is a tiny model plus a planted adapter (a random S0*,
state offset or LoRA); its greedy completions of random prompts are the training data; a fresh adapter trained
by the project's own loop (`s0.train.train`) must recover most of the teacher's NLL advantage over the bare model,
on the training prompts and on held-out prompts. This is the proof that training and evaluation learn what they
should: NLL, not greedy agreement, because greedy decoding of a random model is chaotic.

closure = (NLL(zero) - NLL(student)) / (NLL(zero) - NLL(teacher)), NLL of the teacher's completions. It can
exceed 1: a student can make the teacher's greedy tokens likelier than the teacher itself does.

Why it cannot pass when the adapter silently does nothing: if the planted adapter never reached the model, the
teacher would be the bare model and the gap check fails; if the student were not wired in during training,
`train` raises (no gradient) or the student stays at the bare model; if it were not applied at evaluation, the
student's NLL is the bare model's. Checked once by sabotage (s0-gdn, seed 0): no training, a zero state at
evaluation, or a zero state in training each gave closure 0.00 on both splits; an injection that drops the state
makes `train` raise (nothing requires grad).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from s0.adapters import build_adapter
from s0.adapters import injection as inj
from s0.adapters.kinds import recurrent_layers
from s0.models import TINY_ARCH, build_model
from s0.train import TrainExample, train

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels

pytestmark = pytest.mark.usefixtures("one_thread")

# Smaller than TINY_ARCH (2 recurrent layers of 2 heads, 256 state entries each) so that 48 prompts pin the state
# down well enough to generalise, in seconds. initializer_range=0.2: at the default 0.02 the tied embedding
# dominates the logits and even a huge state barely moves them.
QWEN = dict(
    TINY_ARCH["qwen3_5"],
    num_hidden_layers=3,
    layer_types=["linear_attention", "linear_attention", "full_attention"],
    linear_num_value_heads=2,
    initializer_range=0.2,
)
FALCON = dict(
    TINY_ARCH["falcon_h1"],
    num_hidden_layers=2,
    mamba_n_heads=2,
    mamba_d_ssm=16,
    mamba_chunk_size=16,
    initializer_range=0.2,
)
# Random init draws decay rates A up to 16 (GDN) or 1..H (Mamba-2): the state is gone after a token or two and
# no initial state can matter. Trained models keep slow heads; give every head one.
DECAY = 0.03

N_TRAIN, N_HELD_OUT, PROMPT_LEN, COMPLETION_LEN, STEPS = 48, 32, 4, 24, 60


@dataclasses.dataclass(frozen=True)
class Case:
    family: str
    arch: dict[str, Any]
    method: str
    fields: dict[str, Any]
    plant_scale: float  # std of the planted tensors; sets the gap (0.6-4 nats over seeds 0-2)
    lr: float


CASES = {
    "s0-gdn": Case("qwen3_5", QWEN, "s0", {"alpha": 1.0}, 1.0, 0.1),
    "s0-mamba2": Case("falcon_h1", FALCON, "s0", {"alpha": 1.0}, 3.0, 0.1),
    "state_offset-gdn": Case("qwen3_5", QWEN, "state_offset", {"alpha": 1.0}, 1.0, 0.1),
    # v and o only: LoRA on q/k reshapes attention patterns and does not generalise from this little data.
    "lora": Case("qwen3_5", QWEN, "lora", {"r": 1, "target_modules": ["v_proj", "o_proj"]}, 0.6, 0.05),
}


def slow_model(family: str, arch: dict[str, Any], seed: int) -> torch.nn.Module:
    model = build_model(family, arch, weights="random", seed=seed)
    with torch.no_grad():
        for layer in recurrent_layers(model):
            layer.module.A_log.fill_(math.log(DECAY))
    return model


@torch.no_grad()
def greedy(model: torch.nn.Module, prompts: torch.Tensor, n_new: int) -> torch.Tensor:
    """The new tokens of greedy decoding by plain full forwards (the path training and `nll` use)."""
    ids = prompts
    for _ in range(n_new):
        ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    return ids[:, prompts.shape[1] :]


@torch.no_grad()
def nll(model: torch.nn.Module, prompts: torch.Tensor, completions: torch.Tensor) -> float:
    """Mean NLL per completion token (every row has the same lengths, so no padding)."""
    logits = model(input_ids=torch.cat([prompts, completions], dim=1), use_cache=False).logits
    logits = logits[:, prompts.shape[1] - 1 : -1].float()
    return float(F.cross_entropy(logits.flatten(0, 1), completions.flatten()))


def known_answer(case: Case, seed: int) -> dict[str, float]:
    model = slow_model(case.family, case.arch, seed)
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, 256, (N_TRAIN + N_HELD_OUT, PROMPT_LEN), generator=gen)
    splits = {"train": slice(0, N_TRAIN), "held_out": slice(N_TRAIN, None)}

    teacher = build_adapter(case.method, model, seed=seed, **case.fields)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * case.plant_scale)
    with teacher.active():
        completions = greedy(teacher.model, prompts, COMPLETION_LEN)
        nll_teacher = {k: nll(teacher.model, prompts[s], completions[s]) for k, s in splits.items()}
    teacher.remove()  # the bare model again (LoRA: peft unloaded)
    nll_zero = {k: nll(model, prompts[s], completions[s]) for k, s in splits.items()}

    student = build_adapter(case.method, model, seed=seed + 1, **case.fields)  # zero state / LoRA's own init
    examples = [
        TrainExample(p.tolist(), c.tolist()) for p, c in zip(prompts[:N_TRAIN], completions[:N_TRAIN])
    ]
    train(student, examples, steps=STEPS, lr=case.lr, seed=seed, progress=False, micro_batch_size=N_TRAIN)
    with student.active():
        nll_student = {k: nll(student.model, prompts[s], completions[s]) for k, s in splits.items()}

    out = {f"gap_{k}": nll_zero[k] - nll_teacher[k] for k in splits}
    out |= {f"closure_{k}": (nll_zero[k] - nll_student[k]) / out[f"gap_{k}"] for k in splits}
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_known_answer(name: str):
    r = known_answer(CASES[name], seed=0)
    summary = ", ".join(f"{k}={v:.2f}" for k, v in r.items())
    assert r["gap_train"] > 0.3 and r["gap_held_out"] > 0.3, f"the planted adapter barely matters: {summary}"
    assert r["closure_train"] >= 0.8, f"training did not reach the teacher on its own prompts: {summary}"
    assert r["closure_held_out"] >= 0.5, f"the trained adapter does not generalise: {summary}"
