"""Running untrusted SQL read-only (Spider): `run_sql`, execution match (`sql_match`, `sql_match_many`,
test-suite-sql-eval's `results_match`) and the worker-side `_sql_request`."""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Sequence

from .child import decode, encode
from .python import Worker, WorkerTimeout, map_worker


class SqlResult(
    collections.namedtuple(
        "SqlResult", "rows error timed_out too_large crashed", defaults=(None, None, False, False, False)
    )
):
    """rows: list of tuples, or None when the query failed; error: message; timed_out: hit the deadline;
    too_large: the result serialises past _SQL_RESULT_LIMIT; crashed: the worker died while answering."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.rows is not None


_SQL_DENY_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# SQL workers keep (namespace) root instead of a dropped uid: database dirs are user data, often 0700, and
# SQL cannot run code here (no extensions, reads-only authorizer), so the uid drop would add little.
_SQL_TARGET = "s0.sandbox.sql:_sql_request"
_SQL_RESULT_LIMIT = 16 << 20  # JSON characters per query result; more is verdict output_too_large
# Longest string or blob a query may build: bounds a single heavy function call (hex(randomblob(2e8)) takes
# seconds inside one VM step, where the progress handler cannot interrupt it). Spider values are short.
_SQL_LENGTH_LIMIT = 16 << 20
_SQL_SLACK = 2.0  # seconds past a query's deadline before its worker is killed (a function that never yields)


def _sql_authorizer(action: int, arg1, arg2, db, source) -> int:
    import sqlite3

    # PITFALLS: mode=ro still allows ATTACH and VACUUM INTO, so only reads are authorised, nothing else.
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if str(arg2).lower() in _SQL_DENY_FUNCS else sqlite3.SQLITE_OK
    ok = action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE)
    return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY


def _first_keyword(sql: str) -> str:
    import re

    s = re.sub(r"^(\s|--[^\n]*(\n|$)|/\*.*?\*/|\()*", "", sql, flags=re.S)
    return s.split(None, 1)[0].lower() if s.strip() else ""


def _sql_request(req: dict) -> dict:
    """Worker side: run read-only queries on one database; each with its own deadline."""
    import sqlite3
    import urllib.parse

    if not os.access(req["db"], os.R_OK):
        return {"results": [{"error": f"cannot read database file {req['db']}"} for _ in req["queries"]]}
    conn = sqlite3.connect(f"file:{urllib.parse.quote(req['db'])}?mode=ro&immutable=1", uri=True)
    # As test-suite-sql-eval: some Spider text is not valid UTF-8.
    conn.text_factory = lambda b: b.decode(errors="ignore")
    if hasattr(conn, "setlimit"):
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQL_LENGTH_LIMIT)
    conn.set_authorizer(_sql_authorizer)
    out = []
    for q in req["queries"]:
        deadline = time.monotonic() + req["timeout"]
        conn.set_progress_handler(lambda d=deadline: time.monotonic() > d, 1000)  # interrupts a running step
        try:
            if _first_keyword(q) not in ("select", "with", "values"):
                raise sqlite3.DatabaseError("only SELECT / WITH / VALUES statements are allowed")
            rows = conn.execute(q).fetchmany(req["max_rows"] + 1)
            if len(rows) > req["max_rows"]:
                raise sqlite3.DatabaseError(f"result larger than {req['max_rows']} rows")
            enc = encode([tuple(r) for r in rows])
            if len(json.dumps(enc)) > _SQL_RESULT_LIMIT:
                out.append({"error": f"result over {_SQL_RESULT_LIMIT >> 20} MiB", "too_large": True})
                continue
            out.append({"rows": enc})
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {e}", "timed_out": "interrupted" in str(e)})
    conn.close()
    return {"results": out}


def _sql_results(resp: dict, n: int) -> list[SqlResult]:
    if "results" not in resp:  # the whole request failed: timed out, too large or crashed worker
        flags = {"timed_out": bool(resp.get("timeout")), "too_large": bool(resp.get("too_large")),
                 "crashed": bool(resp.get("crashed"))}  # fmt: skip
        return [SqlResult(error=resp.get("error", "unknown"), **flags)] * n
    return [SqlResult(rows=[tuple(r) for r in decode(x["rows"])]) if "rows" in x
            else SqlResult(error=x["error"], timed_out=x.get("timed_out", False),
                           too_large=x.get("too_large", False)) for x in resp["results"]]  # fmt: skip


def _sql_req(db: str, queries: list[str], timeout: float, max_rows: int) -> dict:
    return {"db": os.path.realpath(db), "queries": queries, "timeout": timeout, "max_rows": max_rows}


def run_sql(db_path: str, query: str, timeout: float = 30.0, max_rows: int = 100_000) -> SqlResult:
    """Run one query read-only in a sandboxed worker (a fresh one per call: simple, not fast)."""
    w = Worker(
        _SQL_TARGET, memory_mb=2048, expose=[os.path.dirname(os.path.realpath(db_path))], drop_uid=False
    )
    try:
        return _sql_results(w.call(_sql_req(db_path, [query], timeout, max_rows), timeout + _SQL_SLACK), 1)[0]
    except WorkerTimeout:
        return SqlResult(error="timeout", timed_out=True)
    finally:
        w.close()


def results_match(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """test-suite-sql-eval's `result_eq` (Zhong et al. 2020), reimplemented.

    Chosen (PITFALLS: pick one and keep it) because it is the de-facto Spider execution-accuracy metric:
    rows compared as multisets, in order only when the gold query has ORDER BY, and columns may come in
    any order (a permutation of the predicted columns that matches the gold columns is searched).
    """
    import itertools
    import random
    from collections import Counter

    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    unorder = lambda r: tuple(sorted(r, key=lambda x: str(x) + str(type(x))))  # noqa: E731
    g_u, p_u = [unorder(r) for r in gold], [unorder(r) for r in pred]
    if (g_u != p_u) if order_matters else (set(g_u) != set(p_u)):
        return False
    n = len(gold[0])
    col_sets = [{r[i] for r in gold} for i in range(n)]
    allowed = [set(range(n)) for _ in range(n)]
    if n > 3:  # prune column permutations with sampled rows, as the original (seeded here: deterministic)
        rng = random.Random(0)
        for _ in range(20):
            row = rng.choice(pred)
            for i in range(n):
                allowed[i] = {j for j in allowed[i] if row[j] in col_sets[i]}
    for perm in itertools.product(*allowed):
        if len(set(perm)) != n:
            continue
        permuted = [tuple(r[j] for j in perm) for r in pred]
        if order_matters and gold == permuted:
            return True
        if not order_matters and Counter(gold) == Counter(permuted):
            return True
    return False


def _match(gold_q: str, g: SqlResult, p: SqlResult) -> dict:
    """One item's verdict: pass | fail | error | timeout | output_too_large | worker_crashed | gold_error."""
    correct = False
    if g.crashed or p.crashed:
        verdict = "worker_crashed"
    elif not g.ok:
        verdict = "gold_error"
    elif p.timed_out:
        verdict = "timeout"
    elif p.too_large:
        verdict = "output_too_large"
    elif not p.ok:
        verdict = "error"
    else:
        correct = results_match(g.rows, p.rows, order_matters="order by" in gold_q.lower())
        verdict = "pass" if correct else "fail"
    return {"correct": correct, "verdict": verdict, "gold": g, "pred": p}


def sql_match(db_path: str, gold: str, pred: str, timeout: float = 30.0) -> dict:
    """Execution match of `pred` against `gold` on one database: {"correct", "verdict", "gold", "pred"}."""
    return sql_match_many([(db_path, gold, pred)], workers=1, timeout=timeout, progress=False)[0]


def sql_match_many(items: Sequence[tuple[str, str, str]], *, workers: int = 2, timeout: float = 30.0,
                   progress: bool = True, max_rows: int = 100_000) -> list[dict]:  # fmt: skip
    """`sql_match` over (db_path, gold, pred) triples with persistent sandboxed SQL workers. Each query is
    its own request, so a worker killed for overrunning (or crashing, or answering too much) costs only
    that item its verdict."""
    dirs = sorted({os.path.dirname(os.path.dirname(os.path.realpath(db))) for db, _, _ in items})
    reqs = [_sql_req(db, [q], timeout, max_rows) for db, g, p in items for q in (g, p)]
    resps = map_worker(_SQL_TARGET, reqs, timeout=timeout + _SQL_SLACK, workers=workers, progress=progress,
                       desc="sql", expose=dirs, memory_mb=2048, drop_uid=False)  # fmt: skip
    res = [_sql_results(r, 1)[0] for r in resps]
    return [_match(g, res[2 * i], res[2 * i + 1]) for i, (_, g, _) in enumerate(items)]
