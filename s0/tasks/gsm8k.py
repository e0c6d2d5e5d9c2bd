"""GSM8K (Cobbe et al. 2021): grade-school word problems with a numeric answer after `####`.

Usage:
    task = get_task("gsm8k")                      # the bundled copy; data_root=<dir> for your own
    task.load_split("train")   # the first 200 train problems (collection)
    task.load_split("eval")    # the 1319 test problems (Sec 5.6 transfer)
    get_task("gsm8k", prompt_template="harness")   # the harness's earlier user message

Answer extraction (`parse_answer`), written down because a grader that reads "1/2" as 1 gives credit
for the wrong number:
- Where: the first non-empty line after the last `####`; without `####`, the last sentence of the reply
  that holds a number, and within it the text after its last "=" ("9 * 2 = $18 every day." -> 18).
  Text inside <think>...</think> is ignored; markdown bold (`**`) is dropped.
- That segment must hold exactly one number; words around it (units, "dollars", "%", `\boxed{}`) are
  allowed. Two numbers ("18 hours and 30 minutes", "10 - 5", "First 3 then 12 and finally 42") give
  no answer: nothing guesses which one was meant.
- A number is read whole, exactly, or not at all:
  plain "42", "-5", "+5", "0.50", ".5", "−5" (unicode minus); an optional currency sign ($, €, £);
  thousands separators only in valid groups of three ("1,000", "1,234,567.5"; "3,5" and "12,34" give no
  answer, they may be decimal commas); scientific notation "1e3" -> 1000, "1.5e-3" -> 0.0015;
  fractions "1/2" -> 0.5 and "1/3" -> 1/3 (compared exactly); integer powers "2^10", "2^{10}" -> 1024
  (exponents above 64, here and in scientific notation, give no answer).
- No answer for anything else: times "12:30", "1.234,5", "3.5.2", a sign set apart ("- 5": a bullet or
  a minus), a number right after an operator ("* 2", "x 5" as the end of an expression).
- A reply with no answer is counted wrong with verdict "no_answer" and a `reason` saying why.
- Comparison is exact over the rationals (`numbers_equal`): "18.0" equals "18", "0.5" equals "1/2".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar

from s0.tasks.base import Example, Task, check_lengths, parse_jsonl, read_data, strip_thinking

# The user message, by protocol (conf/protocol/): `reference` is the authors' (JackYoung27/s0-tuning
# experiments/state_peft/gsm8k.py format_prompt, under the chat template with thinking off, as build_prompt
# renders it), `harness` this harness's earlier one. Both ask for the answer after ####, so the grader is the
# same under both.
PROMPTS = {
    "reference": "Solve this math problem step by step. End with the answer after ####.\n\n{question}",
    "harness": (
        "Solve the following math problem step by step. On the last line, write the final answer as a plain "
        "number in the form `#### <number>`.\n\n{question}"
    ),
}
# A number-like run of text: an optional sign (attached, or apart: "- 5"), an optional currency sign,
# then digits with everything that could continue the number (",", ".", ":", "/", "^", "e3"), read
# whole so that "1/2" or "12:30" is never cut down to its first part.
_TOKEN = re.compile(
    r"(?<![\w.,])(?:(?P<sign>[-+\u2212])(?P<gap>\s+)?)?[$\u20ac\u00a3]?\s?"
    r"(?P<body>\.?\d(?:[\d,.:/^{}]|[eE][-+]?(?=\d))*)"
)
_DECIMAL = re.compile(r"(?P<mant>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE](?P<exp>[-+]?\d+))?")
_FRACTION = re.compile(r"(\d+)/(\d+)")
_POWER = re.compile(r"(\d+)\^\{?(\d+)\}?")
_MAX_EXP = 64  # larger exponents (1e999999, 2^100000) give no answer rather than a huge number
_OPERATOR_BEFORE = re.compile(r"[-+*/\u00d7\u00f7^]\s*[$\u20ac\u00a3]?\s*$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")
_CALC = re.compile(r"<<[^>]*>>")  # the dataset's calculator annotations, e.g. <<16-3-4=9>>


@dataclass
class GSM8KTask(Task):
    name: ClassVar[str] = "gsm8k"
    # 2: strict answer extraction (issue 14); 3: the prompt is a choice (prompt_template, default reference,
    # issue 12), recorded in every record
    VERSION: ClassVar[int] = 3
    prompt_template: str = "reference"  # a key of PROMPTS
    # assumption: the first 200 train problems for collection (the paper names no train subset; the
    # brief fixes 200); evaluation uses all 1319 test problems, the standard split (Sec 4.2, 5.6).
    n_train: int | None = 200

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPTS:
            raise ValueError(
                f"prompt_template must be one of {sorted(PROMPTS)}, got {self.prompt_template!r}"
            )

    def _load(self, split: str) -> list[Example]:
        src = "train" if split == "train" else "test"
        rows = parse_jsonl(read_data(self.data_root, f"gsm8k/{src}.jsonl"))
        return [self._example(i, src, r) for i, r in enumerate(rows)]

    def _example(self, i: int, src: str, row: dict) -> Example:
        gold = normalize_number(row["answer"].split("####")[-1])
        msg = {"role": "user", "content": PROMPTS[self.prompt_template].format(question=row["question"])}
        return Example(
            f"gsm8k/{src}/{i}", [msg], gold, {"question": row["question"], "solution": row["answer"]}
        )

    def record(self, example: Example, correct: bool, extracted: Any, verdict: str, **extra: Any) -> dict:
        # which user message produced the completion: records of both templates share one VERSION
        return super().record(
            example, correct, extracted, verdict, prompt_template=self.prompt_template, **extra
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
            pred, why = parse_answer(c)
            if pred is None:
                out.append(self.record(ex, False, None, "no_answer", gold=ex.gold, reason=why))
                continue
            ok = numbers_equal(pred, ex.gold)
            out.append(self.record(ex, ok, pred, "pass" if ok else "fail", gold=ex.gold))
        return out


def normalize_number(s: str) -> str | None:
    """'$1,234.50.' -> '1234.5'; '18.0' -> '18'; None unless the text is one clean number (rules above)."""
    value, _ = parse_number(s)
    return value


def parse_number(s: str) -> tuple[str | None, str]:
    """One clean number -> (canonical text, ""); anything else -> (None, why)."""
    toks = list(_TOKEN.finditer(s))
    if not toks:
        return None, "no number"
    if len(toks) > 1:
        return None, "several numbers"
    return _read_token(s, toks[0])


def _read_token(text: str, m: re.Match) -> tuple[str | None, str]:
    body = m.group("body").rstrip(".,:;/^{")
    if body.count("{") != body.count("}"):
        body = body.rstrip("}")
    sign = -1 if m.group("sign") in ("-", "\u2212") else 1
    if m.group("gap"):
        return None, "sign apart from the number"
    if _OPERATOR_BEFORE.search(text[: m.start()]):
        return None, "the number ends an expression"
    value = _read_body(body)
    if value is None:
        return None, f"not one clean number: {body!r}"
    value *= sign
    return _canonical(value), ""


def _read_body(body: str) -> Fraction | None:
    if m := _DECIMAL.fullmatch(body):
        mant, exp = m.group("mant").replace(",", ""), m.group("exp")
        if exp is not None and abs(int(exp)) > _MAX_EXP:
            return None
        return Fraction(Decimal(mant + (f"e{exp}" if exp is not None else "")))
    if m := _FRACTION.fullmatch(body):
        den = int(m.group(2))
        return Fraction(int(m.group(1)), den) if den else None
    if m := _POWER.fullmatch(body):
        base, exp = int(m.group(1)), int(m.group(2))
        return Fraction(base**exp) if exp <= _MAX_EXP else None
    return None


def _canonical(v: Fraction) -> str:
    """Exact text: a decimal when the value has one ('0.5', '1000'), else 'p/q'."""
    den = v.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{v.numerator}/{v.denominator}"
    text = format((Decimal(v.numerator) / Decimal(v.denominator)).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def answer_segment(completion: str) -> tuple[str | None, str]:
    """The text that must hold the answer: after the last `####` (its line), else the final statement."""
    text = strip_thinking(completion).replace("\u2212", "-").replace("**", "")  # markdown bold
    if "####" in text:
        after = text.rsplit("####", 1)[1]
        lines = [ln for ln in after.splitlines() if ln.strip()]
        return (lines[0] if lines else ""), "####"
    if not _TOKEN.search(text):
        return None, "fallback"
    # the last sentence that holds a number, and within it what follows its last "="
    sentences = [s for s in _SENTENCE.split(text) if _TOKEN.search(s)]
    return sentences[-1].rsplit("=", 1)[-1], "fallback"


def parse_answer(completion: str) -> tuple[str | None, str]:
    """(canonical number, "") or (None, why there is no answer)."""
    seg, where = answer_segment(completion)
    if seg is None:
        return None, "no number"
    value, why = parse_number(seg)
    return value, (f"{why} ({'after ####' if where == '####' else 'in the final statement'})" if why else "")


def extract_answer(completion: str) -> str | None:
    return parse_answer(completion)[0]


def numbers_equal(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return False
    return Fraction(pred) == Fraction(gold)
