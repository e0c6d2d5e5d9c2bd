"""Which runs of an experiment's arm belong together: one arm's per-seed values at one scope. Pure pandas, no
model code; the tables, the figures and the mechanism analyses (which runs to analyse) read records through it.

    select(metrics, "main_qwen", "s0")            # seed, value, run_id, model (one row per seed)
    scope_label(metrics, "main_qwen")             # '' for the paper's model, else e.g. 'tiny_qwen3_5 (smoke)'

Runs of different models never pool. Each experiment is read at one scope (model, weights, smoke status,
hub id): the paper's model (conf/experiment/<name>.yaml) with hub weights when such runs exist, else the
only scope present (the demo's tiny smoke runs, say); several scopes and none of them the paper's stop the
table with `MixedRunsError`. The `model` column is "" for the paper's model and otherwise the label of the
model the runs really used ("tiny_qwen3_5 (smoke)"), so a table can say so instead of printing the paper's.

`select` reads the evaluated problems (`split` "eval") of runs made under the default selection split (`eval`)
unless told otherwise: scores on a held-out selection slice (`split="selection"`) and runs trained without it
(`selection_split="heldout"`, issue 12) never pool with the usual eval numbers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

CONF = Path(__file__).resolve().parents[2] / "conf" / "experiment"
SCOPE_COLUMNS = ("model", "weights", "smoke", "hub_id")
SPLIT_COLUMNS = ("split", "selection_split")  # which problems a value is from; how its run's selection split


class MixedRunsError(ValueError):
    """Runs of different models, weights or smoke status would pool into one table cell."""


@dataclass(frozen=True)
class Scope:
    """Which runs of an experiment a table reads: one model, one kind of weights, smoke or not."""

    model: str
    weights: str
    smoke: bool
    hub_id: str
    paper: bool  # the model the paper used for this experiment, with hub weights, not a smoke run

    @property
    def label(self) -> str:
        """'' for the paper's model (nothing to flag), else e.g. 'tiny_qwen3_5 (smoke)'."""
        return "" if self.paper else describe(self.model, self.weights, self.smoke)


def describe(model: str, weights: str, smoke: bool) -> str:
    if smoke:
        return f"{model} (smoke)"
    return model if weights == "hub" else f"{model} ({weights} weights)"


@functools.cache
def experiment_model(experiment: str) -> str | None:
    """The model conf/experiment/<experiment>.yaml selects (`override /model: ...`), None if it names none."""
    path = CONF / f"{experiment}.yaml"
    doc = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    for entry in doc.get("defaults", []):
        if isinstance(entry, dict) and "override /model" in entry:
            return entry["override /model"]
    return None


# A frame is split once into (experiment, arm, metric) groups and the scopes each experiment holds; the frame
# stays in the cache beside them so its id cannot be reused while the entry lives.
_CACHE: dict[int, tuple[pd.DataFrame, dict, dict]] = {}


def _cache(metrics: pd.DataFrame) -> tuple[dict, dict]:
    if metrics.empty or not {"experiment", "arm", "metric"} <= set(metrics.columns):
        return {}, {}
    if id(metrics) not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        m = metrics.copy()
        # Records written before these columns existed (and hand-made frames) are hub runs of their model.
        for col, default in zip(SCOPE_COLUMNS, ("", "hub", False, "")):
            m[col] = m[col].where(m[col].notna(), default) if col in m else default
        m["smoke"] = m["smoke"].astype(bool)
        for col in SPLIT_COLUMNS:  # records from before selection splits: eval values of eval-split runs
            m[col] = m[col].where(m[col].notna(), "eval") if col in m else "eval"
        keys = m[["experiment", "arm", "metric", *SPLIT_COLUMNS]].astype(str).agg("\x1f".join, axis=1)
        groups = {tuple(k.split("\x1f")): g for k, g in m.groupby(keys)}
        scopes = {
            str(exp): sorted(set(g[list(SCOPE_COLUMNS)].itertuples(index=False, name=None)))
            for exp, g in m.groupby(m.experiment.astype(str))
        }
        _CACHE[id(metrics)] = (metrics, groups, scopes)
    return _CACHE[id(metrics)][1:]


def scope(metrics: pd.DataFrame, experiment: str, model: str | None = None, cell: str = "") -> Scope | None:
    """The runs of `experiment` (of `model`, if given) a table reads; None when there are none.

    Raises MixedRunsError, naming `cell`, when several scopes are present and none is the paper's."""
    keys = _cache(metrics)[1].get(experiment, [])
    if model is not None:
        keys = [k for k in keys if k[0] == model]
    want = model or experiment_model(experiment)

    def is_paper(k: tuple) -> bool:
        return (want is None or k[0] == want) and k[1] == "hub" and not k[2]

    chosen = [k for k in keys if is_paper(k)] or keys
    if len(chosen) > 1:
        names = ", ".join(describe(*k[:3]) + (f" ({k[3]})" if k[3] else "") for k in chosen)
        paper = f"the paper's {want} with hub weights" if want else "a single model"
        raise MixedRunsError(
            f"{cell or experiment}: runs of {names} would pool into one cell and none is {paper}; "
            "read one model's results folder at a time"
        )
    return Scope(*chosen[0], paper=is_paper(chosen[0])) if chosen else None


def scope_label(metrics: pd.DataFrame, experiment: str, model: str | None = None, cell: str = "") -> str:
    """'' when `experiment` is read from the paper's model (or has no runs), else the model's label."""
    sc = scope(metrics, experiment, model, cell)
    return sc.label if sc else ""


def scope_notes(metrics: pd.DataFrame) -> list[str]:
    """One line per experiment whose records hold runs the tables leave out (other models, smoke runs)."""
    notes = []
    for exp, keys in _cache(metrics)[1].items():
        if len(keys) < 2 or exp in ("scaling", "None"):  # scaling is read per model
            continue
        try:
            sc = scope(metrics, exp)
        except MixedRunsError as err:
            notes.append(str(err))
            continue
        used = (sc.model, sc.weights, sc.smoke, sc.hub_id)
        left = ", ".join(describe(*k[:3]) for k in keys if k != used)
        notes.append(f"{exp}: read runs of {describe(*used[:3])}; left out runs of {left}")
    return notes


def select(
    metrics: pd.DataFrame,
    experiment: str,
    arm: str,
    metric: str = "pass@1",
    model: str | None = None,
    eval_task: str | None = None,
    split: str = "eval",
    selection_split: str = "eval",
) -> pd.DataFrame:
    """Per-seed values of one arm: columns seed, value, run_id, model (one row per seed, sorted by seed).

    Only runs of the experiment's scope (see the module docstring); `model` narrows it to one model. `split`
    "selection" reads the held-out slice's values, `selection_split` "heldout" the runs trained without it."""
    empty = pd.DataFrame({"seed": pd.Series(dtype=int), "value": pd.Series(dtype=float),
                          "run_id": pd.Series(dtype=str), "model": pd.Series(dtype=str)})  # fmt: skip
    m = _cache(metrics)[0].get((experiment, arm, metric, split, selection_split))
    if m is None:
        return empty
    sc = scope(metrics, experiment, model, cell=f"{experiment}/{arm} {metric}")
    if sc is None:
        return empty
    m = m[(m.model == sc.model) & (m.weights == sc.weights) & (m.smoke == sc.smoke) & (m.hub_id == sc.hub_id)]
    if eval_task is not None:
        m = m[m.eval_task == eval_task]
    if m.empty:
        return empty
    rows = [{"seed": int(seed), "value": float(g.value.mean()), "run_id": ";".join(sorted(set(g.run_id))),
             "model": sc.label} for seed, g in m.groupby("seed")]  # fmt: skip
    return pd.DataFrame(rows)
