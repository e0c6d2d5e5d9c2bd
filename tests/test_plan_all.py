"""`make plan` (scripts/plan_all.py, issue 11): every experiment's plan in one process, no traceback, nothing
written, in seconds; the Makefile's experiment order covers every experiment file."""

from __future__ import annotations

import importlib.util
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def load_plan_all():
    spec = importlib.util.spec_from_file_location("plan_all", ROOT / "scripts" / "plan_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def makefile_order() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^EXPERIMENTS_IN_ORDER := ((?:.*\\\n)*.*)$", text, re.M)
    return m.group(1).replace("\\\n", " ").split()


def plan_all(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan_all.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_makefile_order_lists_every_experiment_once():
    order = makefile_order()
    assert sorted(order) == EXPERIMENTS and len(EXPERIMENTS) == 17  # the paper's 16 + expressiveness


def test_make_plan_prints_every_plan_in_seconds_writing_nothing(tmp_path):
    outputs = {d: (ROOT / d).exists() for d in ("outputs", "multirun")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    out = plan_all(tmp_path, *makefile_order())  # exactly what `make plan` runs, from another folder
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr and out.stderr == ""
    headers = re.findall(r"^== (\w+) =+$", out.stdout, re.M)
    assert headers == makefile_order()
    assert out.stdout.count("\nexperiment  ") + out.stdout.startswith("experiment  ") == 17
    assert re.search(r"^17 plans, \d+ runs \(", out.stdout, re.M)
    # It ends with the GPU time of `make reproduce-all` (s0/run/cost.py): every distinct run once.
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"make reproduce-all: \d+ runs, [\d,.]+ h of GPU time on one [A-Z0-9]+.*", last), last
    assert int(last.split()[2]) < int(re.search(r"^17 plans, (\d+) runs", out.stdout, re.M).group(1))
    # and every plan with its own total
    assert len(re.findall(r"^experiment: \d+ runs, .* of GPU time on one [A-Z0-9]+", out.stdout, re.M)) == 17
    # A run listing per plan, e.g. main_qwen's 10 seeds x 6 arms.
    main_qwen = out.stdout.split("== main_qwen ", 1)[1].split("\n== ", 1)[0]
    assert (
        "runs        60" in main_qwen and len(re.findall(r"^\s+\d+  [0-9a-f]{12}  ", main_qwen, re.M)) == 60
    )
    # Nothing written: neither where it ran nor Hydra's outputs/ or multirun/ in the checkout.
    assert list(tmp_path.iterdir()) == []
    assert {d: (ROOT / d).exists() for d in outputs} == outputs
    # "In seconds": CPU time, which a busy shared machine does not inflate (wall time is printed).
    print(f"plan_all: {wall:.1f} s wall, {cpu:.1f} s CPU")
    assert cpu < 15, f"plan_all took {cpu:.1f} s of CPU ({wall:.1f} s wall)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_experiment"], "unknown experiment no_such_experiment"),
        (["main_qwen", "sed=1"], "unknown config key 'sed'"),
        (["main_qwen", "experiment=scaling"], "give experiments by name"),
        (["main_qwen", "seed=abc"], "error: "),
        (["main_qwen", "gpu=v100"], "gpu: 'v100' is not one of a10g, a100, h100, h200"),
    ],
)
def test_plan_all_mistakes_get_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        load_plan_all().main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_plan_all_with_an_override_and_summary_only(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_plan_all().main(["main_qwen", "passk", "debug=smoke", "--summary"]) == 0
    out = capsys.readouterr().out
    assert out.count("SMOKE") == 2 and "run_id" not in out and "2 plans" in out
    assert list(tmp_path.iterdir()) == []
