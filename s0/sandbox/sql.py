"""Running untrusted SQL read-only (Spider): `run_sql`, execution match (`sql_match`, `sql_match_many`,
test-suite-sql-eval's `results_match`) and the worker-side `_sql_request`."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Sequence

from .child import _dec, _enc
from .python import Worker, WorkerTimeout, map_worker


class SqlResult(collections.namedtuple("SqlResult", "rows error timed_out", defaults=(None, None, False))):
    """rows: list of tuples, or None when the query failed; error: message; timed_out: hit the deadline."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.rows is not None


_SQL_DENY_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# SQL workers keep (namespace) root instead of a dropped uid: database dirs are user data, often 0700, and
# SQL cannot run code here (no extensions, reads-only authorizer), so the uid drop would add little.
_SQL_TARGET = "s0.sandbox.sql:_sql_request"


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
            out.append({"rows": _enc([tuple(r) for r in rows])})
        except Exception as e:
            out.append({"error": f"{type(e).__name__}: {e}", "timed_out": "interrupted" in str(e)})
    conn.close()
    return {"results": out}


def _sql_results(resp: dict, n: int) -> list[SqlResult]:
    if "results" not in resp:
        return [SqlResult(error=resp.get("error", "unknown"), timed_out=bool(resp.get("timeout")))] * n
    return [SqlResult(rows=[tuple(r) for r in _dec(x["rows"])]) if "rows" in x
            else SqlResult(error=x["error"], timed_out=x.get("timed_out", False)) for x in resp["results"]]  # fmt: skip


def _sql_req(db: str, queries: list[str], timeout: float, max_rows: int) -> dict:
    return {"db": os.path.realpath(db), "queries": queries, "timeout": timeout, "max_rows": max_rows}


def run_sql(db_path: str, query: str, timeout: float = 30.0, max_rows: int = 100_000) -> SqlResult:
    """Run one query read-only in a sandboxed worker (a fresh one per call: simple, not fast)."""
    w = Worker(
        _SQL_TARGET, memory_mb=2048, expose=[os.path.dirname(os.path.realpath(db_path))], drop_uid=False
    )
    try:
        return _sql_results(w.call(_sql_req(db_path, [query], timeout, max_rows), timeout + 30), 1)[0]
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
    if not g.ok:
        verdict, correct = "gold_error", False
    elif p.timed_out:
        verdict, correct = "timeout", False
    elif not p.ok:
        verdict, correct = "error", False
    else:
        correct = results_match(g.rows, p.rows, order_matters="order by" in gold_q.lower())
        verdict = "pass" if correct else "fail"
    return {"correct": correct, "verdict": verdict, "gold": g, "pred": p}


def sql_match(db_path: str, gold: str, pred: str, timeout: float = 30.0) -> dict:
    """Execution match of `pred` against `gold` on one database: {"correct", "verdict", "gold", "pred"}."""
    return sql_match_many([(db_path, gold, pred)], workers=1, timeout=timeout, progress=False)[0]


def sql_match_many(items: Sequence[tuple[str, str, str]], *, workers: int = 2, timeout: float = 30.0,
                   progress: bool = True, max_rows: int = 100_000) -> list[dict]:  # fmt: skip
    """`sql_match` over (db_path, gold, pred) triples with persistent sandboxed SQL workers."""
    dirs = sorted({os.path.dirname(os.path.dirname(os.path.realpath(db))) for db, _, _ in items})
    reqs = [_sql_req(db, [g, p], timeout, max_rows) for db, g, p in items]
    resps = map_worker(_SQL_TARGET, reqs, timeout=2 * timeout + 30, workers=workers, progress=progress,
                       desc="sql", expose=dirs, memory_mb=2048, drop_uid=False)  # fmt: skip
    return [_match(g, *_sql_results(r, 2)) for (_, g, _), r in zip(items, resps)]
