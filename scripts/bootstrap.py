"""Set up the environment `make demo`, `make test` and CI run in: standard library only, so a bare `python3`
(>= 3.11) can run it on a fresh clone.

    python3 scripts/bootstrap.py                    # .venv with the locked CPU set (constraints.txt)
    python3 scripts/bootstrap.py --gpu              # the GPU set instead (make install): torch's CUDA build
    python3 scripts/bootstrap.py --python PY        # install into PY's environment instead of .venv

Creates the virtualenv when `--python` names a `<dir>/bin/python` that does not exist yet, then installs:
torch's CPU build first (the locked `+cpu` version, from pip's configured indexes and local wheels, else the
PyTorch CPU index; never the multi-GB CUDA build from PyPI), then the package with its dev tools, every
version pinned by constraints.txt. A stamp in the environment records a hash of constraints.txt and
pyproject.toml and the flavour (cpu or gpu); while they are unchanged a second call returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
HASHED = (LOCK, ROOT / "pyproject.toml")
STAMP = ".s0-install.json"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_PYTHON = (3, 11)


def fail(message: str) -> None:
    print(f"bootstrap: error: {message}", file=sys.stderr)
    sys.exit(1)


def say(message: str) -> None:
    print(f"bootstrap: {message}", flush=True)


def lock_hash() -> str:
    h = hashlib.sha256()
    for path in HASHED:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def env_dir(python: Path) -> Path:
    """The environment a `<env>/bin/python` belongs to (where the stamp lives)."""
    return python.parent.parent


def read_stamp(env: Path) -> dict:
    try:
        return json.loads((env / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def pip(python: Path, *args: str, quiet_failure: bool = False) -> bool:
    """`python -m pip install -q ...`; True when it succeeded. quiet_failure: keep pip's output unless asked."""
    cmd = [str(python), "-m", "pip", "install", "-q", *args]
    if not quiet_failure:
        return subprocess.run(cmd, cwd=ROOT).returncode == 0
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return out.returncode == 0


def install(python: Path, flavour: str) -> None:
    lock = str(LOCK)
    if not pip(python, "-c", lock, "--upgrade", "pip"):
        fail("could not upgrade pip (see above)")
    if flavour == "cpu":
        # The lock pins torch==X+cpu, which PyPI never has: pip's configured sources (local wheels, a mirror)
        # first, quietly, then the PyTorch CPU index.
        if not pip(python, "-c", lock, "--no-deps", "torch", quiet_failure=True):
            say(f"torch's locked CPU build is not in pip's configured sources; trying {TORCH_CPU_INDEX}")
            if not pip(python, "-c", lock, "--no-deps", "torch", "--index-url", TORCH_CPU_INDEX):
                fail(
                    f"could not install torch's CPU build ({lock_line('torch')}) from PyPI or {TORCH_CPU_INDEX}"
                )
        if not pip(python, "-c", lock, "-e", ".[dev]"):
            fail("could not install the package with constraints.txt (see above)")
        check = "import torch, sys; sys.exit(1 if torch.version.cuda else 0)"
        if subprocess.run([str(python), "-c", check]).returncode != 0:
            fail(
                "a CUDA build of torch is installed; the CPU set needs torch's CPU build (pip uninstall torch)"
            )
    else:
        # Every pin but torch's: its CUDA build comes from PyPI with its own nvidia-* and triton packages.
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("".join(line for line in LOCK.open() if not line.startswith("torch==")))
        try:
            if not pip(python, "-c", f.name, "-e", ".[gpu,dev]"):
                fail("could not install the GPU set (see above)")
        finally:
            Path(f.name).unlink()


def lock_line(name: str) -> str:
    return next((line.strip() for line in LOCK.open() if line.startswith(f"{name}==")), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--python",
        default=".venv/bin/python",
        help="the interpreter to install into (default .venv/bin/python)",
    )
    flavour = parser.add_mutually_exclusive_group()
    flavour.add_argument(
        "--cpu", dest="flavour", action="store_const", const="cpu", help="the locked CPU set"
    )
    flavour.add_argument(
        "--gpu", dest="flavour", action="store_const", const="gpu", help="torch's CUDA build and fla"
    )
    parser.add_argument("--force", action="store_true", help="install even if the stamp is current")
    args = parser.parse_args(argv)

    python = Path(args.python)
    if not python.is_absolute():
        found = shutil.which(args.python) if "/" not in args.python else None
        python = Path(found) if found else ROOT / python
    env = env_dir(python)
    stamp = read_stamp(env)
    # Without --cpu/--gpu an environment keeps the flavour it was installed with (a GPU box's `make test`).
    want = {"hash": lock_hash(), "flavour": args.flavour or stamp.get("flavour", "cpu")}
    if python.exists() and stamp == want and not args.force:
        return 0

    start = time.time()
    if not python.exists():
        if python.name not in ("python", "python3") or python.parent.name != "bin":
            fail(f"{args.python} does not exist")
        if sys.version_info < MIN_PYTHON:
            fail(
                f"needs Python >= {'.'.join(map(str, MIN_PYTHON))} to create {env}, this is {sys.version.split()[0]}; "
                "run `make PYTHON3=python3.11 ...` (or newer)"
            )
        say(f"creating the virtualenv {env.relative_to(ROOT) if env.is_relative_to(ROOT) else env}")
        if subprocess.run([sys.executable, "-m", "venv", str(env)]).returncode != 0:
            fail("python3 -m venv failed (on Debian/Ubuntu: apt install python3-venv)")
    why = "first install" if not stamp else "constraints.txt or pyproject.toml changed"
    if stamp and stamp.get("flavour") != want["flavour"]:
        why = f"{stamp.get('flavour')} -> {want['flavour']}"
    if args.force:
        why = "--force"
    say(f"installing the locked {want['flavour'].upper()} set into {env} ({why}; a few minutes)")
    install(python, want["flavour"])
    try:
        (env / STAMP).write_text(json.dumps(want) + "\n")
    except OSError as err:
        say(f"warning: could not write the stamp ({err}); the next call installs again")
    say(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
