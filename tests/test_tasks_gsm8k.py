"""GSM8K task: split sizes, answer extraction, and grading of every gold solution (own vs other answer)."""

from __future__ import annotations

import os

import pytest

from s0.tasks import TaskDataError, get_task
from s0.tasks.gsm8k import extract_answer, normalize_number

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
        ("First 3 then 12 and finally 42 dollars.", "42"),
        ("It costs $1,250.", "1250"),
        ("<think>maybe #### 99</think>The total is 100", "100"),
        ("#### 3\nlater text with 7", "3"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


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
