"""What every benchmark shares: the Example record, the Task interface, prompt rendering and text helpers.

A task is data + a prompt + an extractor + a metric (lm-eval / human-eval style); no model code here.
Generation takes `task.build_prompt(example, tokenizer)` strings and returns completion texts, which go
back into `task.score(examples, completions)`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

SPLITS = ("train", "eval")


class TaskDataError(RuntimeError):
    """The benchmark data (or Spider's databases) cannot be found or loaded."""


@dataclass
class Example:
    id: str  # stable across runs, e.g. "HumanEval/81", "gsm8k/test/12"
    prompt_messages: list[dict]  # chat messages, rendered by Task.build_prompt
    gold: Any  # answer / test code / SQL query
    meta: dict = field(default_factory=dict)


@dataclass
class Task:
    """Base class; subclasses set `name`, `VERSION` and implement `_load`, `plain_prompt`, `extract`, `score`.

    VERSION is bumped whenever the prompt, the extraction or the scoring changes; it is stored in every
    scored record so results from different versions are never mixed silently.
    """

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 0
    data_root: str | None = None  # local copy, e.g. ../shared/data; None: the Hugging Face hub
    n_train: int | None = None  # None = the whole split
    n_eval: int | None = None

    def load_split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        examples = self._load(split)
        n = self.n_train if split == "train" else self.n_eval
        return examples if n is None else examples[:n]

    def build_prompt(self, example: Example, tokenizer: Any) -> str:
        """Chat template with thinking disabled where supported; plain text for template-less tokenizers."""
        if getattr(tokenizer, "chat_template", None):
            kw = dict(tokenize=False, add_generation_prompt=True)
            try:  # Qwen3-style templates read enable_thinking; others ignore it or reject the keyword
                out = tokenizer.apply_chat_template(example.prompt_messages, enable_thinking=False, **kw)
            except TypeError:
                out = tokenizer.apply_chat_template(example.prompt_messages, **kw)
            return out if isinstance(out, str) else str(out)
        return self.plain_prompt(example)

    def record(self, example: Example, correct: bool, extracted: Any, verdict: str, **extra: Any) -> dict:
        return {"id": example.id, "task": self.name, "task_version": self.VERSION, "correct": bool(correct),
                "extracted": extracted, "verdict": verdict, **extra}  # fmt: skip

    # subclass API -----------------------------------------------------------------------------------
    def _load(self, split: str) -> list[Example]:
        raise NotImplementedError

    def plain_prompt(self, example: Example) -> str:
        raise NotImplementedError

    def reference_completion(self, example: Example) -> str | None:
        raise NotImplementedError

    def score(self, examples: list[Example], completions: list[str], workers: int = 2,
              progress: bool = True) -> list[dict]:  # fmt: skip
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- helpers
def check_lengths(examples: list, completions: list) -> None:
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")


def strip_thinking(text: str) -> str:
    """Drop <think>...</think> blocks; text after a lone </think> (the opening tag sat in the prompt);
    and an unterminated <think> to the end (a truncated generation has no answer after it)."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.split("<think>", 1)[0]


_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Markdown fenced blocks as (language, body); an unterminated last fence runs to the end."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def local_file(data_root: str, *parts: str) -> str:
    path = os.path.join(os.path.expanduser(data_root), *parts)
    if not os.path.isfile(path):
        raise TaskDataError(
            f"missing {path} (paths.data_root={data_root}); see ../shared/data/README.md for the layout"
        )
    return path


def hub_rows(repo: str, config: str | None, split: str) -> list[dict]:
    """Rows from the Hugging Face hub through `datasets` (optional, imported lazily)."""
    try:
        import datasets

        return [dict(r) for r in datasets.load_dataset(repo, config, split=split)]
    except Exception as e:  # ImportError, offline, gated: one clear message either way
        raise TaskDataError(
            f"cannot load {repo} ({split}) from the Hugging Face hub: {type(e).__name__}: {e}. "
            "Pass a local copy instead: data_root=<dir> (on the command line: paths.data_root=../shared/data)."
        ) from e
