"""Spider (Yu et al. 2018) text-to-SQL, scored by execution accuracy on the question's SQLite database.

Usage:
    task = get_task("spider", db_dir="/data/spider/database")
    task.load_split("eval")    # the 1034 dev questions, bundled (Sec 5.6: no transfer expected)
    get_task("spider", db_dir=..., prompt_template="harness")   # the harness's earlier user message

Comparison semantics are test-suite-sql-eval's (see `s0.sandbox.results_match`), fixed for all runs.
Verdicts per item (`s0.sandbox.sql_match_many`): pass, fail, error (the prediction failed), timeout,
output_too_large (a result over 16 MiB of JSON), worker_crashed (the sandboxed worker died while answering),
gold_error (the gold query failed), no_answer (no SQL in the reply).
The databases (`<db_dir>/<db_id>/<db_id>.sqlite`) ship only in the Spider release, not with s0; nor does the
train split (`make data` fetches it).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, ClassVar

from s0 import sandbox
from s0.tasks.base import Example, Task, TaskDataError, check_lengths, code_blocks, read_data, strip_thinking

# The user message, by protocol (conf/protocol/): `reference` is the authors' (JackYoung27/s0-tuning
# experiments/state_peft/spider.py format_spider_prompt, under the chat template with thinking off, as
# build_prompt renders it), `harness` this harness's earlier one. extract_sql reads the replies either asks for
# (bare SQL, or a fenced block), so the grader is the same under both.
PROMPTS = {
    "reference": (
        "Given the following SQLite database schema for database '{db_id}':\n\n{schema}\n\n"
        "Write a SQL query to answer: {question}\n\nOutput only the SQL query, no explanation."
    ),
    "harness": (
        "Here is the schema of a SQLite database:\n\n{schema}\n\nWrite one SQLite query that answers this "
        "question: {question}\nReply with only the SQL query, in a single ```sql code block."
    ),
}
GET_DBS = (
    "Download the Spider release (https://yale-lily.github.io/spider, or the spider.zip of the "
    "taoyds/spider GitHub repo), unzip it and pass task.db_dir=<path>/spider/database "
    "(it holds <db_id>/<db_id>.sqlite), or unpack it with `make data SPIDER_ZIP=<path>/spider.zip`."
)
_SQL_START = re.compile(r"\b(select|with)\b", re.I)


@dataclass
class SpiderTask(Task):
    name: ClassVar[str] = "spider"
    # 2: the prompt (user message and schema layout) is a choice (prompt_template, default reference, issue 12),
    # recorded in every record
    VERSION: ClassVar[int] = 2
    prompt_template: str = "reference"  # a key of PROMPTS
    # assumption: the first 500 questions of train_spider.json in file order (the brief's 500; the paper
    # only says "standard splits"); evaluation is the full dev set of 1034.
    n_train: int | None = 500
    db_dir: str | None = None  # default: <data_root>/spider/database
    timeout: float = 30.0  # per query, seconds (a cross join is interrupted by a progress-handler deadline)
    _schemas: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prompt_template not in PROMPTS:
            raise ValueError(
                f"prompt_template must be one of {sorted(PROMPTS)}, got {self.prompt_template!r}"
            )

    def database_dir(self) -> str:
        d = self.db_dir or (os.path.join(self.data_root, "spider", "database") if self.data_root else None)
        if not d or not os.path.isdir(os.path.expanduser(d)):
            raise TaskDataError(f"Spider databases not found (db_dir={d!r}). {GET_DBS}")
        return os.path.realpath(os.path.expanduser(d))

    def db_path(self, db_id: str) -> str:
        path = os.path.join(self.database_dir(), db_id, f"{db_id}.sqlite")
        if not os.path.isfile(path):
            raise TaskDataError(f"missing Spider database {path}. {GET_DBS}")
        return path

    def _load(self, split: str) -> list[Example]:
        rows = self._rows(split)
        self.database_dir()  # fail early and once, before any prompt is built
        src = "train" if split == "train" else "dev"
        return [self._example(f"spider/{src}/{i}", r) for i, r in enumerate(rows)]

    def _rows(self, split: str) -> list[dict]:
        # The bundled copy has dev.json only; train_spider.json comes from `make data` or the Spider release.
        names = ("train_spider.json", "train.json") if split == "train" else ("dev.json",)
        return json.loads(read_data(self.data_root, *(f"spider/{n}" for n in names)))

    def _example(self, ex_id: str, row: dict) -> Example:
        schema = self.schema(row["db_id"])
        text = PROMPTS[self.prompt_template].format(
            db_id=row["db_id"], schema=schema, question=row["question"]
        )
        meta = {"db_id": row["db_id"], "question": row["question"], "schema": schema}
        return Example(ex_id, [{"role": "user", "content": text}], row["query"], meta)

    def schema(self, db_id: str) -> str:
        """The CREATE statements stored in the database file itself, laid out as the prompt template's source
        does: reference as the authors' get_schema (experiments/state_peft/spider.py: each statement as stored,
        a blank line between), harness one per line, stripped, each ending in ";"."""
        if db_id not in self._schemas:
            uri = f"file:{urllib.parse.quote(self.db_path(db_id))}?mode=ro&immutable=1"
            with sqlite3.connect(uri, uri=True) as conn:
                rows = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL")
                self._schemas[db_id] = [r[0] for r in rows]
        statements = self._schemas[db_id]
        if self.prompt_template == "reference":
            return "\n\n".join(statements)
        return "\n".join(s.strip() + ";" for s in statements)

    def record(self, example: Example, correct: bool, extracted: Any, verdict: str, **extra: Any) -> dict:
        # which user message produced the completion: records of both templates share one VERSION
        return super().record(
            example, correct, extracted, verdict, prompt_template=self.prompt_template, **extra
        )

    def plain_prompt(self, example: Example) -> str:
        return f"{example.meta['schema']}\n\n-- Question: {example.meta['question']}\n-- SQLite query:\n"

    def reference_completion(self, example: Example) -> str:
        return example.gold

    def extract(self, completion: str, example: Example | None = None) -> str | None:
        return extract_sql(completion)

    def score(self, examples: list[Example], completions: list[str], workers: int = 2,
              progress: bool = True) -> list[dict]:  # fmt: skip
        check_lengths(examples, completions)
        preds = [extract_sql(c) for c in completions]
        items = [(self.db_path(ex.meta["db_id"]), ex.gold, p) for ex, p in zip(examples, preds) if p]
        matches = iter(
            sandbox.sql_match_many(items, workers=workers, timeout=self.timeout, progress=progress)
        )
        out = []
        for ex, p in zip(examples, preds):
            if not p:
                out.append(self.record(ex, False, None, "no_answer"))
                continue
            m = next(matches)
            err = m["pred"].error or m["gold"].error
            out.append(self.record(ex, m["correct"], p, m["verdict"], **({"detail": err} if err else {})))
        return out


def extract_sql(completion: str) -> str | None:
    """A fenced block (```sql preferred) or the raw reply; from its first SELECT/WITH up to the first `;`
    outside quotes. Only one statement is ever kept (the sandbox refuses several anyway)."""
    text = strip_thinking(completion)
    blocks = code_blocks(text)
    if blocks:
        text = next((b for lang, b in blocks if lang == "sql"), blocks[0][1])
    m = _SQL_START.search(text)
    if not m:
        return None
    sql, quote = text[m.start() :], None
    for i, ch in enumerate(sql):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == ";":
            sql = sql[:i]
            break
    return sql.strip() or None
