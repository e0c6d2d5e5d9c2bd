"""MATH-500 (Hendrycks et al. 2021; the 500-problem subset of Lightman et al.): a final answer in \\boxed{}.

Usage:
    task = get_task("math500")      # the bundled copy, 250 train / 250 eval
    records = task.score(task.load_split("eval"), completions)

Equivalence is math-verify's `verify(gold, pred)` (gold first: it is asymmetric). It runs with its own
signal-based timeouts off, inside sandboxed worker processes with a wall-clock bound (PITFALLS): parsing
untrusted text goes through sympy's parse_expr, which evaluates Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from s0 import sandbox
from s0.tasks.base import Example, Task, check_lengths, parse_jsonl, read_data, strip_thinking

INSTRUCTION = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
_BOX = re.compile(r"\\(?:boxed|fbox)\b")


@dataclass
class Math500Task(Task):
    name: ClassVar[str] = "math500"
    VERSION: ClassVar[int] = 1
    # MATH-500 is a test-only set; the paper (Sec 4.2, 5.6) does not say how it was split.
    # assumption: rows [0, split_at) train and [split_at, 500) eval in file order. The file order is
    # already shuffled (subjects and levels are balanced across the two halves), so no reshuffle.
    split_at: int = 250
    n_train: int | None = 250
    verify_timeout: float = 10.0  # assumption: wall-clock seconds per answer pair, then "timeout"

    def _load(self, split: str) -> list[Example]:
        rows = parse_jsonl(read_data(self.data_root, "math500/test.jsonl"))
        idx = range(self.split_at) if split == "train" else range(self.split_at, len(rows))
        return [self._example(i, rows[i]) for i in idx]

    def _example(self, i: int, row: dict) -> Example:
        msg = {"role": "user", "content": INSTRUCTION.format(problem=row["problem"])}
        meta = {k: row[k] for k in ("problem", "solution", "subject", "level") if k in row}
        return Example(f"math500/{i}", [msg], row["answer"], meta)

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
        todo = [{"gold": ex.gold, "pred": p} for ex, p in zip(examples, preds) if p is not None]
        resps = iter(sandbox.map_worker("s0.tasks.math500:verify_request", todo, timeout=self.verify_timeout,
                                        workers=workers, progress=progress, desc="math-verify"))  # fmt: skip
        out = []
        for ex, p in zip(examples, preds):
            if p is None:
                out.append(self.record(ex, False, None, "no_answer", gold=ex.gold))
                continue
            r = next(resps)
            verdict = "timeout" if r.get("timeout") else "error" if "error" in r else None
            ok = bool(r.get("correct")) and verdict is None
            out.append(self.record(ex, ok, p, verdict or ("pass" if ok else "fail"), gold=ex.gold))
        return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) with nested braces; also `\\boxed 5`."""
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    rest = text[i:].lstrip()
    if not rest.startswith("{"):
        m = re.match(r"[^\s$]+", rest)  # "\boxed 5$": the token up to whitespace or the closing $
        return m.group(0) if m else None
    depth = 0
    for j, ch in enumerate(rest):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return rest[1:j].strip()
    return None  # unbalanced: truncated generation


def verify_request(req: dict) -> dict:
    """Worker side (inside the sandbox): {"gold", "pred"} -> {"correct"}."""
    from math_verify import parse, verify

    gold = parse(f"${req['gold']}$", parsing_timeout=None)
    pred = parse(f"${req['pred']}$", parsing_timeout=None)
    return {"correct": bool(gold and pred and verify(gold, pred, timeout_seconds=None))}
