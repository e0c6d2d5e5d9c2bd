"""HumanEval task: split, prompt, extraction, and the grader on all 164 canonical solutions (and broken ones)."""

from __future__ import annotations

import time

import pytest

from s0.tasks import TASKS, get_task
from s0.tasks.humaneval import PROMPTS, break_last_return, build_program, normalize_body

TASK = get_task("humaneval")
PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


class ChatTok:
    chat_template = "{{ messages }}"

    def __init__(self, reject_kwarg: bool = False):
        self.reject_kwarg, self.calls = reject_kwarg, []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, **kw):
        if self.reject_kwarg and kw:
            raise TypeError("unexpected keyword")
        self.calls.append(kw)
        return "<chat>" + messages[-1]["content"] + "<assistant>"


class PlainTok:
    chat_template = None


def test_registry_and_options():
    assert set(TASKS) == {"humaneval", "math500", "gsm8k", "spider"}
    with pytest.raises(TypeError):
        get_task("humaneval", db_dir="x")
    assert get_task("humaneval", db_dir=None, n_eval=3).n_eval == 3  # unset foreign options are ignored
    with pytest.raises(KeyError):
        get_task("mbpp")


def test_split_is_paper_sec_4_2():
    train, evals = TASK.load_split("train"), TASK.load_split("eval")
    assert [e.id for e in train] == [f"HumanEval/{i}" for i in range(80)]
    assert [e.id for e in evals] == [f"HumanEval/{i}" for i in range(80, 164)]
    assert len(get_task("humaneval", n_eval=5).load_split("eval")) == 5


def test_prompt_asks_for_the_body_and_shows_the_signature():
    ex = TASK.load_split("eval")[0]
    content = ex.prompt_messages[0]["content"]
    assert "function body" in content and ex.meta["prompt"] in content
    tok = ChatTok()
    assert TASK.build_prompt(ex, tok).startswith("<chat>") and tok.calls == [{"enable_thinking": False}]
    assert TASK.build_prompt(ex, ChatTok(reject_kwarg=True)).startswith("<chat>")  # no enable_thinking
    assert TASK.build_prompt(ex, PlainTok()) == ex.meta["prompt"]


def test_prompt_templates_by_protocol():
    """reference (the default) is the authors' user message (JackYoung27/s0-tuning experiments/humaneval.py
    format_prompt), harness our earlier one; an unknown template is refused."""
    ex = TASK.load_split("eval")[0]
    authors = (
        "Complete the following Python function. Only output the function body, no explanation. No markdown.\n\n"
        + ex.meta["prompt"]
    )
    assert TASK.prompt_template == "reference" and ex.prompt_messages[0]["content"] == authors
    harness = (
        get_task("humaneval", prompt_template="harness").load_split("eval")[0].prompt_messages[0]["content"]
    )
    assert harness == PROMPTS["harness"].format(prompt=ex.meta["prompt"]) and "```python" in harness
    with pytest.raises(ValueError, match="prompt_template"):
        get_task("humaneval", prompt_template="chatty")


@pytest.mark.parametrize(
    "completion",
    [
        "    return a + b\n",
        "return a + b",
        "```python\nreturn a + b\n```",
        "<think>maybe a - b?</think>\n```python\n    return a + b\n```\nThis adds them.",
        "Here you go:\n```py\ndef add(a: int, b: int) -> int:\n    return a + b\n```",
        "```\nx = a\nif x:\n    return x + b\nreturn b\n```",
        "x = a + b\n    return x\n",  # first line lost its indentation
        "\tresult = a + b\n\treturn result\n",
        "</think>\n\n```python\nfrom typing import List\n\ndef add(a, b):\n    return a + b\n```",
        "    return helper(a) + b\n\n\ndef helper(x):\n    return x\n",
        "        return a + b\n",
    ],
    ids=[
        "body",
        "unindented",
        "fence",
        "think+fence",
        "full-def",
        "nested",
        "lost-indent",
        "tabs",
        "close-think",
        "body+helper",
        "over-indented",
    ],
)
def test_extraction_variants_pass(completion):
    prog = build_program(PROMPT, completion, "add")
    compile(prog, "<p>", "exec")
    ns: dict = {}
    exec(prog, ns)
    assert ns["add"](2, 3) == 5


def test_extraction_empty_is_no_answer():
    assert build_program(PROMPT, "<think>only thinking</think>", "add") is None
    assert build_program(PROMPT, "<think>truncated ...", "add") is None
    assert normalize_body("") == ""


def test_break_last_return():
    body = "    if a:\n        return a + b\n    return (b +\n            a)\n"
    broken = break_last_return(PROMPT, body, "add")
    assert broken.rstrip().endswith("\n    return None") and "return a + b" in broken


def test_score_records_and_no_answer():
    exs = TASK.load_split("train")[:3]
    comps = [TASK.reference_completion(exs[0]), "<think>no answer</think>", "    return None\n"]
    recs = TASK.score(exs, comps, progress=False)
    assert [r["verdict"] for r in recs] == ["pass", "no_answer", "fail"]
    assert all(r["task_version"] == TASK.VERSION and r["id"] == e.id for r, e in zip(recs, exs))
    assert {r["prompt_template"] for r in recs} == {"reference"}  # which user message made the completions
    with pytest.raises(ValueError):
        TASK.score(exs, comps[:2], progress=False)


def test_all_164_canonical_pass_and_all_164_broken_fail():
    """Acceptance: every canonical solution passes; with its last return made `return None` none does."""
    exs = TASK.load_split("train") + TASK.load_split("eval")
    good = [TASK.reference_completion(e) for e in exs]
    bad = [break_last_return(e.meta["prompt"], g, e.meta["entry_point"]) for e, g in zip(exs, good)]
    t = time.monotonic()
    recs = TASK.score(exs + exs, good + bad, workers=2, progress=False)
    print(f"\n328 HumanEval programs on 2 workers: {time.monotonic() - t:.1f}s")
    passed = [r["id"] for r in recs[:164] if not r["correct"]]
    assert not passed, [(r["id"], r["verdict"], r["detail"][-300:]) for r in recs[:164] if not r["correct"]]
    assert not [r["id"] for r in recs[164:] if r["correct"]]
