"""Benchmarks: HumanEval, MATH-500, GSM8K, Spider. `get_task(name, **options)` builds one.

Usage:
    from s0.tasks import get_task
    task = get_task("gsm8k", n_eval=100)   # the bundled data; data_root=<dir> reads a local folder
    examples = task.load_split("eval")
    prompts = [task.build_prompt(ex, tokenizer) for ex in examples]
    records = task.score(examples, completions)   # one dict per completion, with "task_version"
"""

from __future__ import annotations

import dataclasses

from s0.tasks.base import Example, Task, TaskDataError
from s0.tasks.gsm8k import GSM8KTask
from s0.tasks.humaneval import HumanEvalTask
from s0.tasks.math500 import Math500Task
from s0.tasks.spider import SpiderTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (HumanEvalTask, Math500Task, GSM8KTask, SpiderTask)}


def get_task(name: str, **options) -> Task:
    """Build a task; options are its dataclass fields (data_root, n_train, n_eval, and task-specific ones)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    cls = TASKS[name]
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    # A shared config may carry another task's options; unset (None) ones are ignored, set ones are errors.
    unknown = sorted(k for k, v in options.items() if k not in known and v is not None)
    if unknown:
        raise TypeError(f"task {name!r} has no option(s) {unknown}; it takes {sorted(known)}")
    return cls(**{k: v for k, v in options.items() if k in known})


__all__ = ["TASKS", "Example", "Task", "TaskDataError", "get_task"]
