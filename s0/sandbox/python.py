"""Running untrusted Python: `run_python` / `run_many` (judge-candidate protocol, verdicts) and persistent
sandboxed `Worker`s (`map_worker`) for trusted code on untrusted requests."""

from __future__ import annotations

import collections
import json
import os
import select
import selectors
import time
from collections.abc import Callable, Iterable, Sequence

from .child import _Lines, _send
from .isolation import SandboxError, _Proc, isolation

_OUTPUT_KEEP = 8 << 10  # tail of stdout+stderr kept in the result
_OUTPUT_KILL = 32 << 20  # more output than this kills the program (a pass is still possible only via judge)


# namedtuples, not dataclasses: sandboxed workers import this package, and dataclasses costs ~15 ms.
class SandboxResult(
    collections.namedtuple("SandboxResult", "verdict detail output duration", defaults=("", "", 0.0))
):
    """verdict: "pass" | "fail" (tests ran and failed) | "error" (program did not load) | "timeout";
    detail: traceback or reason; output: tail of the program's merged stdout/stderr; duration: seconds."""

    __slots__ = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def _drain(outs: dict[int, bytearray]) -> None:
    """What is already buffered (bounded: a program may still be writing)."""
    for fd, buf in outs.items():
        p = select.poll()
        p.register(fd, select.POLLIN)
        for _ in range(16):
            if not p.poll(0) or not (chunk := os.read(fd, 1 << 16)):
                break
            buf += chunk
            del buf[:-_OUTPUT_KEEP]


def _await(verdict_fd: int, outs: dict[int, bytearray], deadline: float) -> dict:
    """Drain the outputs (bounded) until a message arrives on `verdict_fd` ({"message": parsed line}),
    the channel closes, too much output arrives, or time runs out (those three: {"verdict", "detail"})."""
    sel = selectors.DefaultSelector()
    sel.register(verdict_fd, selectors.EVENT_READ)
    for fd in outs:
        sel.register(fd, selectors.EVENT_READ)
    vbuf, total = bytearray(), 0
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if key.fd != verdict_fd:
                    if not chunk:
                        sel.unregister(key.fd)
                    outs[key.fd] += chunk
                    del outs[key.fd][:-_OUTPUT_KEEP]
                    total += len(chunk)
                    if total > _OUTPUT_KILL:
                        return {"verdict": "fail", "detail": f"output over {_OUTPUT_KILL >> 20} MiB"}
                    continue
                if not chunk:
                    return {"verdict": "fail", "detail": "exited without a verdict"}
                vbuf += chunk
                if b"\n" in vbuf:
                    _drain(outs)
                    try:
                        return {"message": json.loads(vbuf.split(b"\n")[0])}
                    except ValueError:
                        return {"message": None}
        return {"verdict": "timeout", "detail": ""}
    finally:
        sel.close()


def _interpret(msg, judged: bool) -> dict:
    if judged:  # the judge's report (trusted)
        if msg["verdict"] == "harness_error":
            raise SandboxError(f"the trusted tests failed to run:\n{msg['detail']}")
        return msg
    if msg == {"ready": True}:  # program-only mode: the candidate's own message, strictly parsed
        return {"verdict": "pass"}
    if isinstance(msg, dict) and "init_error" in msg:
        return {"verdict": "error", "detail": str(msg["init_error"])}
    return {"verdict": "fail", "detail": "malformed message from the program"}


def run_python(code: str, *, setup: str = "", test: str = "", entry_point: str | None = None,
               timeout: float = 10.0, memory_mb: int = 1024) -> SandboxResult:  # fmt: skip
    """Run an untrusted program; with `test`, pass iff the trusted `check(candidate)` returns.

    code: the untrusted program (e.g. prompt + completion); it only has to define `entry_point`.
    setup: trusted code run before `test` in the judge (e.g. the prompt, for helpers like `poly`).
    test: trusted code defining `check(candidate)`. Without it, a pass only means the program loaded
        without raising; that weaker mode is forgeable (there is nothing to check) and is for smoke use.
    """
    if test and not entry_point:
        raise ValueError("a test needs the entry_point it calls")
    start = time.monotonic()
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    jout_r, jout_w = os.pipe()
    fds, procs = {req_r, req_w, resp_r, resp_w, res_r, res_w, out_r, out_w, jout_r, jout_w}, []
    lim = {"memory_mb": memory_mb, "cpu_s": int(timeout) + 2, "watchdog_s": timeout + 30}

    def close(*which: int) -> None:
        for fd in which:
            os.close(fd)
            fds.discard(fd)

    try:
        cand = {"code": code, "entry_point": entry_point, "req_fd": req_r, "resp_fd": resp_w}
        procs.append(_Proc("candidate", cand, pass_fds=(req_r, resp_w), out_fd=out_w, **lim))
        if test:
            judge = {"setup": setup, "test": test, "entry_point": entry_point, "req_fd": req_w,
                     "resp_fd": resp_r, "result_fd": res_w}  # fmt: skip
            procs.append(_Proc("judge", judge, pass_fds=(req_w, resp_r, res_w), out_fd=jout_w, **lim))
            close(req_r, req_w, resp_w, resp_r, res_w, out_w, jout_w)
            verdict_fd = res_r
        else:
            close(req_r, req_w, resp_w, res_w, out_w, jout_w)  # EOF on requests ends the candidate
            verdict_fd = resp_r
        outs = {out_r: bytearray(), jout_r: bytearray()}
        res = _await(verdict_fd, outs, start + timeout)
        if "message" in res:
            res = _interpret(res["message"], judged=bool(test))
        out = outs[out_r].decode(errors="replace")
        return SandboxResult(
            res["verdict"], str(res.get("detail", ""))[-4000:], out, time.monotonic() - start
        )
    finally:
        for p in procs:
            p.stop()
        close(*list(fds))


def _progress(it: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, dynamic_ncols=True)


def _pmap(fn: Callable, items: Sequence, workers: int, progress: bool, desc: str) -> list:
    """Bounded thread pool (each thread drives one child process) with a progress bar; keeps order."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        futs = [ex.submit(fn, item) for item in items]
        for _ in _progress(as_completed(futs), len(futs), desc, progress):
            pass
    return [f.result() for f in futs]


def run_many(jobs: Sequence[dict], *, workers: int = 2, progress: bool = True,
             desc: str = "sandbox") -> list[SandboxResult]:  # fmt: skip
    """`run_python(**job)` for each job, `workers` at a time, results in job order."""
    isolation()  # probe once before the threads start
    return _pmap(lambda job: run_python(**job), jobs, workers, progress, desc)


# ----------------------------------------------------------------------------- persistent workers
class WorkerTimeout(TimeoutError):
    pass


class Worker:
    """A long-lived sandboxed process running trusted `target` ("module:function") on untrusted requests.

    Used where a fresh process per item would cost more than the item (math-verify imports sympy; SQL).
    A call past its wall-clock bound kills the worker (`WorkerTimeout`); the next call starts a new one.
    """

    def __init__(self, target: str, *, memory_mb: int = 4096, expose: Iterable[str] = (),
                 start_timeout: float = 120.0, drop_uid: bool = True):  # fmt: skip
        self.target, self.memory_mb, self.expose = target, memory_mb, tuple(expose)
        self.start_timeout, self.drop_uid, self._p, self._lines = start_timeout, drop_uid, None, None

    def _start(self) -> None:
        r, w = os.pipe()
        try:
            self._p = _Proc("server", {"target": self.target, "resp_fd": w}, memory_mb=self.memory_mb,
                            cpu_s=86_400, watchdog_s=None, pass_fds=(w,), expose=self.expose,
                            drop_uid=self.drop_uid)  # fmt: skip
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._lines = _Lines(r)
        try:
            ready = self._lines.get(time.monotonic() + self.start_timeout)
        except TimeoutError:
            ready = None
        if not ready or not json.loads(ready).get("ready"):
            self.close()
            raise SandboxError(f"sandbox worker {self.target} failed to start")

    def call(self, request: dict, timeout: float) -> dict:
        if self._p is None:
            self._start()
        try:
            _send(self._p.proc.stdin.fileno(), request)
            line = self._lines.get(time.monotonic() + timeout)
        except TimeoutError:
            self.close()
            raise WorkerTimeout(f"{self.target} took longer than {timeout}s") from None
        except OSError:
            line = None
        if line is None:  # crashed (e.g. out of memory): report, restart on the next call
            self.close()
            return {"error": "sandbox worker died"}
        return json.loads(line)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            os.close(self._lines.fd)
            self._p = self._lines = None


def map_worker(target: str, requests: Sequence[dict], *, timeout: float, workers: int = 2, progress: bool = True,
               desc: str = "worker", expose: Iterable[str] = (), memory_mb: int = 4096,
               drop_uid: bool = True) -> list[dict]:  # fmt: skip
    """Answer each request with `workers` persistent Workers; a timed-out request gives {"timeout": True}."""
    import queue

    isolation()
    pool: queue.Queue = queue.Queue()
    made = [
        Worker(target, memory_mb=memory_mb, expose=expose, drop_uid=drop_uid) for _ in range(max(1, workers))
    ]
    for w in made:
        pool.put(w)

    def one(req: dict) -> dict:
        w = pool.get()
        try:
            return w.call(req, timeout)
        except WorkerTimeout:
            return {"error": "timeout", "timeout": True}
        finally:
            pool.put(w)

    try:
        return _pmap(one, requests, len(made), progress, desc)
    finally:
        for w in made:
            w.close()
