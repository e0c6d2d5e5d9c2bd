"""The results store: one directory per run, named by the hash of its config, and a loader into pandas.

    results/runs/<run_id>/
        run.json            the planned run (every field that determines the result)
        config.yaml         the whole resolved config of the command that made it
        provenance.json     git commit, package versions, hardware
        adapter/            adapter_model.safetensors + adapter_config.json (trained methods)
        train.json          per-step loss and state norm, seconds
        samples.jsonl       one line per problem x sample: completion, verdict, correct
        metrics.json        {metric: value}, plus counts; "selection": {metric: value} on the held-out
                            training slice (selection.split=heldout, issue 12)
        samples_selection.jsonl  the per-sample records behind "selection"
        timing.json         seconds per stage
        member-*.json       which experiment and arm asked for this run (one file each)
        run.log             the log of the process that made it
        done                written last, atomically: only runs with it are results

Every file is written to a temporary name and renamed, so a crash never leaves a half-written file under
its final name, and a run without `done` is never read as a result.

Each metrics row says which problems its value is from (`split`: "eval", or "selection" for the held-out
slice), how the run's selection was split (`selection_split`: "eval", or "heldout" for runs trained without
the slice) and whether it was graded without sandbox isolation (`sandbox_weak`, from provenance.json).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

DONE = "done"


def atomic_write(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so readers never see half a file.

    The file gets the mode any new file gets (0666 less the umask: 0644 under the usual 022, 0664 under a
    group-sharing 002), not mkstemp's owner-only 0600: results folders are shared on clusters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: str | Path, summary: dict) -> None:
    """The last write of a run: its presence is what makes the directory a result."""
    write_json(Path(run_dir) / DONE, summary)


def add_membership(run_dir: str | Path, experiment: str | None, arm: str) -> None:
    """Record that `experiment`/`arm` uses this run (a run can serve several experiments)."""
    name = f"member-{experiment or 'adhoc'}-{arm}.json".replace("/", "_")
    write_json(Path(run_dir) / name, {"experiment": experiment, "arm": arm})


@dataclass
class Results:
    """Every finished run as tidy frames, and what could not be read."""

    metrics: pd.DataFrame  # one row per run x membership x metric, config fields as columns
    samples: pd.DataFrame  # one row per run x problem x sample
    unfinished: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"{self.metrics['run_id'].nunique() if len(self.metrics) else 0} finished runs"]
        if self.unfinished:
            lines.append(
                f"{len(self.unfinished)} unfinished (no 'done'): {', '.join(sorted(self.unfinished))}"
            )
        for run_id, why in sorted(self.corrupt.items()):
            lines.append(f"corrupt {run_id}: {why}")
        return "\n".join(lines)


def is_smoke(run: dict) -> bool:
    """A smoke run: `debug=smoke` said so, or the model is a tiny test model (which only smoke runs use)."""
    if "smoke" in run:
        return bool(run["smoke"])
    model = run["model"]
    name = str(model.get("name"))
    return name == model.get("tiny") or name.startswith("tiny_")


def run_protocol(run: dict) -> str | None:
    """The protocol a run was made under ("reference" or "harness", issue 12), None in records from before runs
    recorded it. run.json holds the name, or the protocol group with its `name`."""
    value = run.get("protocol")
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value else None


def run_selection(run: dict) -> tuple[str, int | None]:
    """("heldout", n) for a run trained without the last n training problems (selection.split=heldout, issue
    12); ("eval", None) otherwise, and for records from before runs recorded it."""
    n = (run.get("selection") or {}).get("heldout")
    return ("heldout", int(n)) if n else ("eval", None)


def sandbox_weak(provenance: dict) -> bool:
    """True when the run was graded in weak isolation (sandbox.isolation=weak: provenance.json `sandbox.weak`,
    s0.run.provenance, issue 14); False without the field (older runs, fixtures)."""
    return (provenance.get("sandbox") or {}).get("weak") is True


def _flat_run(run: dict) -> dict:
    """The columns a table filters on, from run.json: the model a run really used, not the one asked for."""
    method, model = run["method"], run["model"]
    return {
        "model": model.get("name"),
        "family": model.get("family"),
        "weights": model.get("weights", "hub"),
        "hub_id": model.get("hub_id") or "",
        "smoke": is_smoke(run),
        "method": method["name"],
        "alpha": method.get("alpha") if method["name"] in ("s0", "state_offset") else None,
        "alpha_mode": method.get("alpha_mode") if method["name"] in ("s0", "state_offset") else None,
        "layers": json.dumps(method.get("layers")) if method.get("layers") is not None else None,
        "lr": method.get("lr") if method["name"] != "baseline" else None,
        "steps": method.get("steps") if method["name"] != "baseline" else None,
        "r": method.get("r") if method["name"] == "lora" else None,
        "max_train_examples": method.get("max_train_examples"),
        "task": run["task"]["name"],
        "eval_task": run["eval_task"]["name"],
        "decoding": run["eval"]["mode"],
        "seed": run["seed"],
        "protocol": run_protocol(run),
        "selection_split": run_selection(run)[0],
        "heldout": run_selection(run)[1],
    }


def load_results(results_dir: str | Path, with_samples: bool = True) -> Results:
    """Read every run directory under `results_dir`; only runs with a valid `done` become rows."""
    metric_rows, sample_rows, unfinished, corrupt = [], [], [], {}
    root = Path(results_dir)
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        run_id = run_dir.name
        if not is_done(run_dir):
            unfinished.append(run_id)
            continue
        try:
            run = json.loads((run_dir / "run.json").read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
            json.loads((run_dir / DONE).read_text())
            members = [json.loads(p.read_text()) for p in sorted(run_dir.glob("member-*.json"))]
            samples = read_jsonl(run_dir / "samples.jsonl") if with_samples else []
            prov_path = run_dir / "provenance.json"
            prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
        except (OSError, ValueError, KeyError) as err:
            corrupt[run_id] = f"{type(err).__name__}: {err}"
            continue
        base = {"run_id": run_id, **_flat_run(run), "sandbox_weak": sandbox_weak(prov)}
        splits = {"eval": metrics, "selection": metrics.get("selection") or {}}
        for member in members or [{"experiment": run.get("experiment"), "arm": run.get("arm")}]:
            for split, values in splits.items():
                for metric, value in values.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        row = {**base, **member, "metric": metric, "value": float(value), "split": split}
                        metric_rows.append(row)
        for s in samples:
            sample_rows.append({"run_id": run_id, **s})
    return Results(pd.DataFrame(metric_rows), pd.DataFrame(sample_rows), unfinished, corrupt)
