"""MATH-500 (Hendrycks et al. 2021; the 500-problem subset of Lightman et al.): a final answer in \\boxed{}.

Usage:
    task = get_task("math500")      # the bundled copy, 250 train / 250 eval
    records = task.score(task.load_split("eval"), completions)
    get_task("math500", prompt_template="harness")   # the harness's earlier user message

Equivalence is math-verify's `verify(gold, pred)` (gold first: it is asymmetric). It runs with its own
signal-based timeouts off, inside sandboxed worker processes with a wall-clock bound (PITFALLS): parsing
untrusted text goes through sympy's parse_expr, which evaluates Python.

Hedges get no credit (issue 14). The rule, applied before math-verify sees anything:
- Every \\boxed{} (and \\fbox{}) in the reply counts, not only the last (text inside <think> is ignored).
  When the reply boxes several different answers, each one must be equivalent to the gold answer:
  "\\boxed{3} ... or \\boxed{4}" fails against 3; "\\boxed{0.5}" and later "\\boxed{\\frac12}" passes against 1/2.
  More than 4 different boxes fail outright (verdict "hedged").
- Inside a box, a relation is read only as "<name> = <value>" (x = 3, a_1 = 3, f(x) = 2x, \\theta = \\pi):
  the name is dropped and the value graded. Any other relation (chains "x = 3 = 4", "4 = 3", inequalities
  "x < 3", \\le, \\ne, \\approx) fails with verdict "hedged" unless the gold answer is itself a relation,
  because math-verify would otherwise grade one side of it. Alternatives ("x = 3 or x = 4", "3, 4",
  "3 \\lor 4") are graded whole, as a set, so they do not equal a single gold value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from s0 import sandbox
from s0.tasks.base import Example, Task, check_lengths, parse_jsonl, read_data, strip_thinking

# The user message, by protocol (conf/protocol/): `reference` is the authors' (JackYoung27/s0-tuning
# experiments/state_peft/math500.py format_prompt, under the chat template with thinking off, as build_prompt
# renders it), `harness` this harness's earlier one. Both ask for \boxed{}, so the grader is the same under
# both.
PROMPTS = {
    "reference": (
        "Solve this math problem. Show your work step by step. Put your final answer in \\boxed{{}}.\n\n{problem}"
    ),
    "harness": "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
}
_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_MAX_BOXES = 4
# "<name> =" at the start of an answer: a letter or Greek command, an optional subscript, optional "(args)"
_LHS = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([^()=]*\))?\s*=(?![=<>])")
_RELATION = re.compile(r"[=<>\u2264\u2265\u2260]|\\(?:leq?|geq?|neq?|lt|gt|approx|sim)(?![A-Za-z])")


@dataclass
class Math500Task(Task):
    name: ClassVar[str] = "math500"
    # 2: every box graded, relations read strictly (issue 14); 3: the prompt is a choice (prompt_template,
    # default reference, issue 12), recorded in every record
    VERSION: ClassVar[int] = 3
    prompt_template: str = "reference"  # a key of PROMPTS
    # MATH-500 is a test-only set; the paper (Sec 4.2, 5.6) does not say how it was split.
    # assumption: rows [0, split_at) train and [split_at, 500) eval in file order. The file order is
    # already shuffled (subjects and levels are balanced across the two halves), so no reshuffle.
    split_at: int = 250
    n_train: int | None = 250
    verify_timeout: float = 10.0  # assumption: wall-clock seconds per answer pair, then "timeout"

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPTS:
            raise ValueError(
                f"prompt_template must be one of {sorted(PROMPTS)}, got {self.prompt_template!r}"
            )

    def _load(self, split: str) -> list[Example]:
        rows = parse_jsonl(read_data(self.data_root, "math500/test.jsonl"))
        idx = range(self.split_at) if split == "train" else range(self.split_at, len(rows))
        return [self._example(i, rows[i]) for i in idx]

    def _example(self, i: int, row: dict) -> Example:
        msg = {"role": "user", "content": PROMPTS[self.prompt_template].format(problem=row["problem"])}
        meta = {k: row[k] for k in ("problem", "solution", "subject", "level") if k in row}
        return Example(f"math500/{i}", [msg], row["answer"], meta)

    def record(self, example: Example, correct: bool, extracted: Any, verdict: str, **extra: Any) -> dict:
        # which user message produced the completion: records of both templates share one VERSION
        return super().record(
            example, correct, extracted, verdict, prompt_template=self.prompt_template, **extra
        )

    def plain_prompt(self, example: Example) -> str:
        return f"Problem: {example.meta['problem']}\nSolution:"

    def reference_completion(self, example: Example) -> str:
        return example.meta["solution"]

    def extract(self, completion: str, example: Example | None = None) -> str | None:
        return last_boxed(strip_thinking(completion))

    def score(self, examples: list[Example], completions: list[str], workers: int = 2,
              progress: bool = True) -> list[dict]:  # fmt: skip
        check_lengths(examples, completions)
        preds = [self.extract(c) for c in completions]
        checks = [graded_answers(strip_thinking(c), ex.gold) for ex, c in zip(examples, completions)]
        todo = [{"gold": ex.gold, "preds": answers} for ex, p, (answers, _) in zip(examples, preds, checks)
                if p is not None and answers]  # fmt: skip
        resps = iter(sandbox.map_worker("s0.tasks.math500:verify_request", todo, timeout=self.verify_timeout,
                                        workers=workers, progress=progress, desc="math-verify"))  # fmt: skip
        out = []
        for ex, p, (answers, why) in zip(examples, preds, checks):
            if p is None:
                out.append(self.record(ex, False, None, "no_answer", gold=ex.gold))
                continue
            if not answers:
                out.append(self.record(ex, False, p, "hedged", gold=ex.gold, reason=why))
                continue
            r = next(resps)
            verdict = ("timeout" if r.get("timeout") else "worker_crashed" if r.get("crashed")
                       else "error" if "error" in r else None)  # fmt: skip
            ok = bool(r.get("correct")) and verdict is None
            out.append(self.record(ex, ok, p, verdict or ("pass" if ok else "fail"), gold=ex.gold))
        return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with nested braces; also `\\boxed 5`."""
    starts = [m.end() for m in _BOX.finditer(text)]
    return _box_at(text, starts[-1])[0] if starts else None


def _box_at(text: str, i: int) -> tuple[str | None, int]:
    """(content of the box whose command ends at i, index past it); None when unbalanced (truncated)."""
    rest = text[i:].lstrip()
    off = len(text) - len(rest)
    if not rest.startswith("{"):
        m = re.match(r"[^\s$]+", rest)  # "\boxed 5$": the token up to whitespace or the closing $
        return (m.group(0), off + m.end()) if m else (None, off)
    depth = 0
    for j, ch in enumerate(rest):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return rest[1:j].strip(), off + j + 1
    return None, len(text)


def all_boxed(text: str) -> list[str]:
    """Contents of every complete outermost \\boxed{...} / \\fbox{...}, in order."""
    out, past = [], 0
    for m in _BOX.finditer(text):
        if m.start() < past:
            continue  # nested in the previous box
        got, past = _box_at(text, m.end())
        if got is not None:
            out.append(got)
    return out


def strict_answer(box: str, gold: str) -> str | None:
    """The text to grade for one box, or None when it is a relation other than "<name> = <value>"."""
    if _RELATION.search(gold):
        return box
    value = _LHS.sub("", box, count=1)
    return None if _RELATION.search(value) else value


def graded_answers(text: str, gold: str) -> tuple[list[str], str]:
    """(the distinct answers that must each equal the gold, "") or ([], why the reply is a hedge)."""
    boxes = list(dict.fromkeys(" ".join(b.split()) for b in all_boxed(text)))
    if len(boxes) > _MAX_BOXES:
        return [], f"{len(boxes)} different boxed answers"
    answers = []
    for b in boxes:
        a = strict_answer(b, gold)
        if a is None:
            return [], f"a relation, not a value: {b!r}"
        answers.append(a)
    return list(dict.fromkeys(answers)), ""


def verify_request(req: dict) -> dict:
    """Worker side (inside the sandbox): {"gold", "preds"} (or one "pred") -> {"correct"}: all must hold."""
    from math_verify import parse, verify

    gold = parse(f"${req['gold']}$", parsing_timeout=None)
    preds = req.get("preds") or [req["pred"]]
    for p in preds:
        pred = parse(f"${p}$", parsing_timeout=None)
        if not (gold and pred and verify(gold, pred, timeout_seconds=None)):
            return {"correct": False}
    return {"correct": True}
