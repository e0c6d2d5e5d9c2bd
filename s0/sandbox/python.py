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

from .child import Lines, send
from .isolation import Proc, SandboxError, checked_isolation

_OUTPUT_KEEP = 8 << 10  # tail of stdout+stderr kept in the result
_OUTPUT_KILL = 32 << 20  # more output than this stops the program: verdict "output_too_large"
_NPROC = 8  # processes (threads included) per sandboxed program: its own uid makes this a per-program cap
_TICK = 0.1  # seconds between checks of a program's summed CPU time and memory
_HZ = os.sysconf("SC_CLK_TCK")


# namedtuples, not dataclasses: sandboxed workers import this package, and dataclasses costs ~15 ms.
class SandboxResult(
    collections.namedtuple("SandboxResult", "verdict detail output duration", defaults=("", "", 0.0))
):
    """verdict: "pass" | "fail" (tests ran and failed) | "error" (program did not load, or its processes
    together used more than memory_mb) | "timeout" (wall clock, or CPU time summed over its processes) |
    "output_too_large" (over 32 MiB printed, or a return value over 64 MiB);
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


def _sysv_bytes(uid: int) -> int:
    """Resident SysV shared memory and queued message bytes that a uid created or owns. They live in no
    process, so without an IPC namespace (weak mode; with one they are capped in it) they count here."""
    total = 0
    for kind, col in (("shm", "rss"), ("msg", "cbytes")):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                head, *rows = [ln.split() for ln in f]
            i, u, c = head.index(col), head.index("uid"), head.index("cuid")
        except (OSError, ValueError):
            continue
        total += sum(int(r[i]) for r in rows if str(uid) in (r[u], r[c]))
    return total


def _uid_usage(uid: int) -> tuple[float, float]:
    """CPU seconds (with reaped children) and resident MiB summed over the live processes of one uid, plus
    its SysV shared memory and message queues."""
    cpu, rss = 0, _sysv_bytes(uid) // os.sysconf("SC_PAGE_SIZE")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        cpu += sum(int(v) for v in st[11:15])  # utime stime cutime cstime
        rss += int(st[21])
    return cpu / _HZ, rss * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _await(verdict_fd: int, outs: dict[int, bytearray], deadline: float,
           watch: tuple[int, float, float] | None = None) -> dict:  # fmt: skip
    """Drain the outputs (bounded) until a message arrives on `verdict_fd` ({"message": parsed line}),
    the channel closes, too much output arrives, time runs out, or the processes of `watch`'s uid together
    pass its CPU seconds or MiB (those: {"verdict", "detail"})."""
    sel = selectors.DefaultSelector()
    sel.register(verdict_fd, selectors.EVENT_READ)
    for fd in outs:
        sel.register(fd, selectors.EVENT_READ)
    vbuf, total, next_tick = bytearray(), 0, time.monotonic() + _TICK
    try:
        while (left := deadline - time.monotonic()) > 0:
            if watch and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + _TICK
                cpu, mib = _uid_usage(watch[0])
                if cpu > watch[1]:
                    return {
                        "verdict": "timeout",
                        "detail": f"CPU time over {watch[1]:g} s summed over processes",
                    }
                if mib > watch[2]:
                    return {
                        "verdict": "error",
                        "detail": f"memory over {watch[2]:g} MiB summed over processes",
                    }
            for key, _ in sel.select(min(left, _TICK) if watch else left):
                chunk = os.read(key.fd, 1 << 16)
                if key.fd != verdict_fd:
                    if not chunk:
                        sel.unregister(key.fd)
                    outs[key.fd] += chunk
                    del outs[key.fd][:-_OUTPUT_KEEP]
                    total += len(chunk)
                    if total > _OUTPUT_KILL:
                        return {
                            "verdict": "output_too_large",
                            "detail": f"output over {_OUTPUT_KILL >> 20} MiB",
                        }
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


def _interpret(msg, judged: bool, nonce: str = "") -> dict:
    if judged:  # the judge's report: trusted only with the nonce that only the judge was given
        if type(msg) is not dict or msg.get("nonce") != nonce:
            return {"verdict": "fail", "detail": "a verdict without the judge's nonce (forged?)"}
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
    lim = {"memory_mb": memory_mb, "cpu_s": int(timeout) + 2, "watchdog_s": timeout + 30, "nproc": _NPROC}

    def close(*which: int) -> None:
        for fd in which:
            os.close(fd)
            fds.discard(fd)

    try:
        checked_isolation()
        cand = {"code": code, "entry_point": entry_point, "req_fd": req_r, "resp_fd": resp_w}
        nonce = os.urandom(16).hex()
        if test:  # the judge first: it has read its nonce and is non-dumpable before the program starts
            judge = {"setup": setup, "test": test, "entry_point": entry_point, "req_fd": req_w,
                     "resp_fd": resp_r, "result_fd": res_w, "nonce": nonce}  # fmt: skip
            procs.append(Proc("judge", judge, pass_fds=(req_w, resp_r, res_w), out_fd=jout_w, **lim))
        procs.append(Proc("candidate", cand, pass_fds=(req_r, resp_w), out_fd=out_w, **lim))
        if test:
            close(req_r, req_w, resp_w, resp_r, res_w, out_w, jout_w)
            verdict_fd = res_r
        else:
            close(req_r, req_w, resp_w, res_w, out_w, jout_w)  # EOF on requests ends the candidate
            verdict_fd = resp_r
        outs = {out_r: bytearray(), jout_r: bytearray()}
        uid = procs[-1].uid
        res = _await(verdict_fd, outs, start + timeout, None if uid is None else (uid, timeout, memory_mb))
        if "message" in res:
            res = _interpret(res["message"], judged=bool(test), nonce=nonce)
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
    checked_isolation()  # probe once before the threads start (and refuse early)
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
        checked_isolation()
        r, w = os.pipe()
        try:
            self._p = Proc("server", {"target": self.target, "resp_fd": w}, memory_mb=self.memory_mb,
                            cpu_s=86_400, watchdog_s=None, pass_fds=(w,), expose=self.expose,
                            drop_uid=self.drop_uid)  # fmt: skip
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._lines = Lines(r)
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
            send(self._p.proc.stdin.fileno(), request)
            line = self._lines.get(time.monotonic() + timeout)
        except TimeoutError:
            self.close()
            raise WorkerTimeout(f"{self.target} took longer than {timeout}s") from None
        except ValueError:  # one answer over the message limit: this item's verdict, not the batch's
            self.close()
            return {"error": "output_too_large", "too_large": True}
        except OSError:
            line = None
        if line is None:  # crashed (e.g. out of memory, killed): report, restart on the next call
            self.close()
            return {"error": "sandbox worker died", "crashed": True}
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

    checked_isolation()
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
