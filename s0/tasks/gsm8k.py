"""GSM8K (Cobbe et al. 2021): grade-school word problems with a numeric answer after `####`.

Usage:
    task = get_task("gsm8k")                      # the bundled copy; data_root=<dir> for your own
    task.load_split("train")   # the first 200 train problems (collection)
    task.load_split("eval")    # the 1319 test problems (Sec 5.6 transfer)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from s0.tasks.base import Example, Task, check_lengths, parse_jsonl, read_data, strip_thinking

INSTRUCTION = (
    "Solve the following math problem step by step. On the last line, write the final answer as a plain "
    "number in the form `#### <number>`.\n\n{question}"
)
_HASH = re.compile(r"####\s*(?:\$\s*)?(-?[\d,]*\.?\d+)")
_NUM = re.compile(r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
_CALC = re.compile(r"<<[^>]*>>")  # the dataset's calculator annotations, e.g. <<16-3-4=9>>


@dataclass
class GSM8KTask(Task):
    name: ClassVar[str] = "gsm8k"
    VERSION: ClassVar[int] = 1
    # assumption: the first 200 train problems for collection (the paper names no train subset; the
    # brief fixes 200); evaluation uses all 1319 test problems, the standard split (Sec 4.2, 5.6).
    n_train: int | None = 200

    def _load(self, split: str) -> list[Example]:
        src = "train" if split == "train" else "test"
        rows = parse_jsonl(read_data(self.data_root, f"gsm8k/{src}.jsonl"))
        return [self._example(i, src, r) for i, r in enumerate(rows)]

    def _example(self, i: int, src: str, row: dict) -> Example:
        gold = normalize_number(row["answer"].split("####")[-1])
        msg = {"role": "user", "content": INSTRUCTION.format(question=row["question"])}
        return Example(
            f"gsm8k/{src}/{i}", [msg], gold, {"question": row["question"], "solution": row["answer"]}
        )

    def plain_prompt(self, example: Example) -> str:
        return f"Question: {example.meta['question']}\nAnswer:"

    def reference_completion(self, example: Example) -> str:
        # assumption: calculator annotations dropped, they are not text a model is asked to write.
        body, answer = example.meta["solution"].rsplit("####", 1)
        return _CALC.sub("", body).rstrip() + f"\n#### {answer.strip()}"

    def extract(self, completion: str, example: Example | None = None) -> str | None:
        return extract_answer(completion)

    def score(self, examples: list[Example], completions: list[str], workers: int = 2,
              progress: bool = True) -> list[dict]:  # fmt: skip
        """Exact numeric match; nothing is executed, so `workers` and `progress` are unused here."""
        check_lengths(examples, completions)
        out = []
        for ex, c in zip(examples, completions):
            pred = extract_answer(c)
            if pred is None:
                out.append(self.record(ex, False, None, "no_answer", gold=ex.gold))
                continue
            ok = numbers_equal(pred, ex.gold)
            out.append(self.record(ex, ok, pred, "pass" if ok else "fail", gold=ex.gold))
        return out


def normalize_number(s: str) -> str | None:
    """'$1,234.50.' -> '1234.5'; '18.0' -> '18'; None if there is no number."""
    s = s.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def extract_answer(completion: str) -> str | None:
    """The number after the last `####`; failing that, the last number in the reply."""
    text = strip_thinking(completion)
    hashes = _HASH.findall(text)
    if hashes:
        return normalize_number(hashes[-1])
    nums = _NUM.findall(text)
    return normalize_number(nums[-1]) if nums else None


def numbers_equal(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return False
    return Decimal(pred) == Decimal(gold)
