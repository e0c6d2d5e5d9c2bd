"""GSM8K task: split sizes, answer extraction, and grading of every gold solution (own vs other answer)."""

from __future__ import annotations

import os

import pytest

from s0.tasks import TaskDataError, get_task
from s0.tasks.gsm8k import PROMPTS, extract_answer, normalize_number, parse_answer

# The copy bundled with s0 (None); S0_TEST_DATA=<dir> runs the same checks on another copy.
DATA = os.environ.get("S0_TEST_DATA")


@pytest.mark.parametrize(
    "text,want",
    [
        ("so 3 + 4 = 7\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("#### $18.00", "18"),
        ("The answer is #### -5.", "-5"),
        ("#### 0.50", "0.5"),
        ("First 3 then 12 and finally 42 dollars.", None),  # several numbers: no guess
        ("So the total is 42 dollars.", "42"),
        ("It costs $1,250.", "1250"),
        ("<think>maybe #### 99</think>The total is 100", "100"),
        ("#### 3\nlater text with 7", "3"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


# Answer formats (issue 14): each row is the text after `####` and the exact value read, or None for
# "no answer" (counted wrong). No row may be read as a different number than the one written.
FORMATS = [
    # fractions: read exactly
    ("1/2", "0.5"),
    ("3/4", "0.75"),
    ("1/3", "1/3"),
    ("-1/2", "-0.5"),
    ("1/0", None),
    ("1 1/2", None),
    # exponents
    ("2^10", "1024"),
    ("2^{10}", "1024"),
    ("10^3", "1000"),
    ("2^100", None),
    ("2^-1", None),
    # scientific notation
    ("1e3", "1000"),
    ("1.5e3", "1500"),
    ("2E2", "200"),
    ("1.5e-3", "0.0015"),
    ("1e999999", None),
    ("1.5 \u00d7 10^3", None),
    # times and other non-numbers
    ("12:30", None),
    ("3.5.2", None),
    ("1.234,5", None),
    ("3-4", None),
    # thousands separators
    ("1,000", "1000"),
    ("1,234,567", "1234567"),
    ("$1,234.50", "1234.5"),
    ("3,5", None),
    ("12,34", None),
    ("1,0000", None),
    ("1,000,00", None),
    # signs
    ("-5", "-5"),
    ("+5", "5"),
    ("\u22125", "-5"),
    ("- 5", None),
    ("$-5", "-5"),
    ("-$5", "-5"),
    ("-0", "0"),
    # units and words around one number
    ("18 dollars", "18"),
    ("$18.00", "18"),
    ("25%", "25"),
    ("\u20ac7", "7"),
    ("The answer is 42.", "42"),
    ("**42**", "42"),
    ("\\boxed{42}", "42"),
    ("18 hours and 30 minutes", None),
    ("18 hours", "18"),
    ("5 km/h", "5"),
    # hedges: two numbers, or one after an operator
    ("3 or 4", None),
    ("3 (or maybe 4)", None),
    ("7, 8", None),
    ("6 * 7", None),
    ("about 5-6", None),
    ("", None),
    ("unknown", None),
]


@pytest.mark.parametrize("text,want", FORMATS)
def test_answer_formats(text, want):
    value, why = parse_answer(f"Some work: 2 + 2 = 4.\n#### {text}")
    assert value == want, why
    assert (why == "") == (want is not None)


def test_no_answer_verdict_says_why():
    task = get_task("gsm8k", data_root="unused")
    from s0.tasks.base import Example

    exs = [Example(id=f"t/{i}", prompt_messages=[], gold=g) for i, g in enumerate(["0.5", "12", "35", "5"])]
    recs = task.score(exs, ["#### 1/2", "#### 12:30", "#### 3,5", "#### - 5"], progress=False)
    assert [r["verdict"] for r in recs] == ["pass", "no_answer", "no_answer", "no_answer"]
    assert [r["correct"] for r in recs] == [True, False, False, False]
    assert "12:30" in recs[1]["reason"] and "sign" in recs[3]["reason"]


def test_normalize_number():
    assert normalize_number("18.0") == "18"
    assert normalize_number("$1,000") == "1000"
    assert normalize_number("-0") == "0"
    assert normalize_number("abc") is None


def test_missing_local_copy_is_one_clear_error(tmp_path):
    with pytest.raises(TaskDataError, match=r"paths\.data_root=.*make data") as err:
        get_task("gsm8k", data_root=str(tmp_path)).load_split("eval")
    assert "\n" not in str(err.value)


def test_splits():
    task = get_task("gsm8k", data_root=DATA)
    train, evals = task.load_split("train"), task.load_split("eval")
    assert len(train) == 200 and len(evals) == 1319
    assert train[0].id == "gsm8k/train/0" and evals[12].id == "gsm8k/test/12"
    assert "####" in evals[0].prompt_messages[0]["content"]


def test_prompt_templates_by_protocol():
    """reference (the default) is the authors' user message (JackYoung27/s0-tuning@9513f26e
    experiments/state_peft/gsm8k.py format_prompt), harness our earlier one; records say which; an unknown
    template is refused."""
    ref = get_task("gsm8k", data_root=DATA)
    ex = ref.load_split("eval")[0]
    authors = (
        "Solve this math problem step by step. End with the answer after ####.\n\n" + ex.meta["question"]
    )
    assert ref.prompt_template == "reference" and ex.prompt_messages[0]["content"] == authors
    har = get_task("gsm8k", data_root=DATA, prompt_template="harness")
    harness = har.load_split("eval")[0].prompt_messages[0]["content"]
    assert harness == PROMPTS["harness"].format(question=ex.meta["question"]) and harness != authors
    assert "`#### <number>`" in harness
    for task, name in ((ref, "reference"), (har, "harness")):
        assert task.score([ex], ["#### 1"], progress=False)[0]["prompt_template"] == name
    with pytest.raises(ValueError, match="prompt_template"):
        get_task("gsm8k", prompt_template="chatty")


def test_every_gold_solution_grades_correct_and_shifted_ones_do_not():
    """Acceptance: 1319/1319 gold solutions correct against their own answer; graded against another
    problem's answer, correct exactly when the two numbers coincide."""
    task = get_task("gsm8k", data_root=DATA)
    evals = task.load_split("eval")
    raw = [e.meta["solution"] for e in evals]  # the dataset text, calculator annotations included
    refs = [task.reference_completion(e) for e in evals]
    for comps in (raw, refs):
        recs = task.score(evals, comps, progress=False)
        assert sum(r["correct"] for r in recs) == 1319, [r for r in recs if not r["correct"]][:5]
        assert all(r["task_version"] == task.VERSION for r in recs)
    shifted = refs[1:] + refs[:1]
    recs = task.score(evals, shifted, progress=False)
    expect = [e.gold == f.gold for e, f in zip(evals, evals[1:] + evals[:1])]
    assert [r["correct"] for r in recs] == expect
    assert sum(expect) < 40  # coincidences only
