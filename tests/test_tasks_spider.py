"""Spider task on SQLite fixtures: loading, schema prompt, SQL extraction, execution-accuracy scoring."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from s0.tasks import TaskDataError, get_task
from s0.tasks.base import read_data
from s0.tasks.spider import PROMPTS, extract_sql
from tests.fixtures.spider.build import build_dbs

# The copy bundled with s0 (None); S0_TEST_DATA=<dir> runs the same checks on another copy.
DATA = os.environ.get("S0_TEST_DATA")


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory):
    return build_dbs(str(tmp_path_factory.mktemp("spider")))


@pytest.fixture(scope="module")
def concert(db_dir):
    """The real dev questions on concert_singer, with prompts built from the fixture database."""
    task = get_task("spider", data_root=DATA, db_dir=db_dir)
    dev = json.loads(read_data(DATA, "spider/dev.json"))
    exs = [task._example(f"spider/dev/{i}", r) for i, r in enumerate(dev) if r["db_id"] == "concert_singer"]
    return task, exs


@pytest.mark.parametrize(
    "text,want",
    [
        ("```sql\nSELECT name FROM singer;\n```", "SELECT name FROM singer"),
        ("Sure!\n```\nselect count(*) from singer\n```\nDone.", "select count(*) from singer"),
        ("SELECT a FROM t; DROP TABLE t;", "SELECT a FROM t"),
        (
            "The query is: SELECT name FROM singer WHERE name = 'a;b'",
            "SELECT name FROM singer WHERE name = 'a;b'",
        ),
        (
            "<think>SELECT 1</think>WITH x AS (SELECT 1) SELECT * FROM x",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ),
        ("```python\nprint(1)\n```", None),
        ("I cannot answer.", None),
    ],
)
def test_extract_sql(text, want):
    assert extract_sql(text) == want


def test_missing_database_dir_is_one_clear_error(tmp_path):
    task = get_task("spider", data_root=str(tmp_path), db_dir=str(tmp_path / "nope"))
    with pytest.raises(TaskDataError, match=r"yale-lily\.github\.io/spider"):
        task.database_dir()


def test_load_requires_databases_and_train_file(tmp_path):
    with pytest.raises(TaskDataError, match="db_dir"):
        get_task("spider", data_root=DATA, db_dir=str(tmp_path / "nope")).load_split("eval")
    with pytest.raises(TaskDataError, match=r"train_spider\.json"):  # Spider's train split is not bundled
        get_task("spider", data_root=DATA, db_dir=str(tmp_path)).load_split("train")


def test_prompt_has_schema_from_the_database_file(concert):
    _, exs = concert
    assert len(exs) == 45
    content = exs[0].prompt_messages[0]["content"]
    assert 'CREATE TABLE "singer_in_concert"' in content and exs[0].meta["question"] in content
    assert "SELECT" not in content.split("answer:")[0]  # no gold leaks into the prompt


def test_prompt_templates_by_protocol(concert, db_dir):
    """reference (the default) is the authors' user message and schema layout (JackYoung27/s0-tuning@9513f26e
    experiments/state_peft/spider.py format_spider_prompt, get_schema), harness our earlier one; records say
    which; an unknown template is refused."""
    import sqlite3

    task, exs = concert
    ex = exs[0]
    with sqlite3.connect(os.path.join(db_dir, "concert_singer", "concert_singer.sqlite")) as conn:
        stored = [
            r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL")
        ]
    authors = (
        "Given the following SQLite database schema for database 'concert_singer':\n\n"
        + "\n\n".join(stored)
        + f"\n\nWrite a SQL query to answer: {ex.meta['question']}\n\nOutput only the SQL query, no explanation."
    )
    assert task.prompt_template == "reference" and ex.prompt_messages[0]["content"] == authors
    har = get_task("spider", data_root=DATA, db_dir=db_dir, prompt_template="harness")
    hex_ = har._example(ex.id, {"db_id": "concert_singer", "question": ex.meta["question"], "query": ex.gold})
    schema = "\n".join(s.strip() + ";" for s in stored)
    harness = hex_.prompt_messages[0]["content"]
    assert harness == PROMPTS["harness"].format(schema=schema, question=ex.meta["question"])
    assert harness != authors and "```sql" in harness
    for t, e, name in ((task, ex, "reference"), (har, hex_, "harness")):
        assert t.score([e], ["no sql"], progress=False)[0]["prompt_template"] == name
    with pytest.raises(ValueError, match="prompt_template"):
        get_task("spider", prompt_template="chatty")


def test_gold_queries_match_themselves_and_not_each_other(concert):
    task, exs = concert
    recs = task.score(exs, [task.reference_completion(e) for e in exs], progress=False)
    assert all(r["correct"] and r["verdict"] == "pass" for r in recs), [r for r in recs if not r["correct"]]
    assert all(r["task_version"] == task.VERSION for r in recs)
    # Questions come in paraphrase pairs; shifting by two pairs them with a different question.
    shifted = task.score(exs, [task.reference_completion(e) for e in exs[2:] + exs[:2]], progress=False)
    assert not any(r["correct"] for r in shifted)


def test_scoring_verdicts(concert):
    task, exs = concert
    ex = exs[0]  # SELECT count(*) FROM singer
    comps = [
        "```sql\nSELECT COUNT(*) FROM singer\n```",
        "SELECT nope FROM singer",
        "no sql",
        "DELETE FROM singer",
    ]
    recs = task.score([ex] * 4, comps, progress=False)
    assert [r["verdict"] for r in recs] == ["pass", "error", "no_answer", "no_answer"]
    assert "no such column" in recs[1]["detail"]


def crash_on_marker(req: dict) -> dict:
    """SQL worker target for the crash test: dies on a marked query, else the real worker. (It is pid 1 of
    its pid namespace, where its own SIGKILL is ignored, so it exits as a killed process would.)"""
    from s0.sandbox.sql import _sql_request

    if any("CRASH_WORKER" in q for q in req["queries"]):
        os._exit(137)
    return _sql_request(req)


def test_one_bad_item_never_loses_the_batch(concert, monkeypatch):
    """Issue 14, item 4: oversized result, crashed worker, a function that never yields: per-item verdicts."""
    import time

    from s0.sandbox import sql

    monkeypatch.setattr(sql, "_SQL_TARGET", "tests.test_tasks_spider:crash_on_marker")
    task, exs = concert
    task = dataclasses.replace(task, timeout=2.0)
    ex = exs[0]  # SELECT count(*) FROM singer
    comps = {
        "pass": "SELECT count(*) FROM singer",
        "output_too_large": "SELECT hex(randomblob(1000000)) FROM singer a, singer b",  # 72 MB of JSON
        "worker_crashed": "SELECT count(*) FROM singer -- CRASH_WORKER",
        # One instr() call, quadratic in C: the progress handler never runs; the worker is killed instead.
        "timeout": "SELECT instr(printf('%.*c', 10000000, 'a'), printf('%.*c', 100000, 'a') || 'b')",
        "error": "SELECT length(hex(randomblob(200000000)))",  # over SQLITE_LIMIT_LENGTH: refused at once
        "fail": "SELECT count(*) + 1 FROM singer",
    }
    order = ["pass", "output_too_large", "pass", "worker_crashed", "pass", "timeout", "error", "fail", "pass"]
    t = time.monotonic()
    recs = task.score([ex] * len(order), [comps[v] for v in order], workers=2, progress=False)
    assert [r["verdict"] for r in recs] == order, [(r["verdict"], r.get("detail")) for r in recs]
    assert time.monotonic() - t < 30  # the overrun was stopped near its 2 s deadline (+2 s slack)
