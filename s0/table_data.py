"""Record look-ups shared by the tables and figures: one arm's per-seed values, per-seed deltas over the
same seed's baseline, degraded problems, and the run ids behind them. Pure pandas, no model code.

    select(metrics, "main_qwen", "s0")            # seed, value, run_id (one row per seed)
    deltas(metrics, "main_qwen", "s0")            # seed, value (= s0 - baseline), run_id, baseline
"""

from __future__ import annotations

import pandas as pd

DEFAULT_N_EVAL = 84  # HumanEval problems 80-163 (Sec 4.2), when the records carry no n_eval


def select(
    metrics: pd.DataFrame,
    experiment: str,
    arm: str,
    metric: str = "pass@1",
    model: str | None = None,
    eval_task: str | None = None,
) -> pd.DataFrame:
    """Per-seed values of one arm: columns seed, value, run_id (one row per seed, sorted by seed)."""
    empty = pd.DataFrame(
        {"seed": pd.Series(dtype=int), "value": pd.Series(dtype=float), "run_id": pd.Series(dtype=str)}
    )
    m = _groups(metrics).get((experiment, arm, metric))
    if m is None:
        return empty
    if model is not None:
        m = m[m.model == model]
    if eval_task is not None:
        m = m[m.eval_task == eval_task]
    if m.empty:
        return empty
    rows = [{"seed": int(seed), "value": float(g.value.mean()), "run_id": ";".join(sorted(set(g.run_id)))}
            for seed, g in m.groupby("seed")]  # fmt: skip
    return pd.DataFrame(rows)


_GROUPS: dict[int, tuple[pd.DataFrame, dict]] = {}


def _groups(metrics: pd.DataFrame) -> dict:
    """metrics split by (experiment, arm, metric), cached per frame (see _COLUMNS for the id trick)."""
    if metrics.empty or not {"experiment", "arm", "metric"} <= set(metrics.columns):
        return {}
    if id(metrics) not in _GROUPS:
        if len(_GROUPS) > 8:
            _GROUPS.clear()
        keys = metrics[["experiment", "arm", "metric"]].astype(str).agg("\x1f".join, axis=1)
        _GROUPS[id(metrics)] = (metrics, {tuple(k.split("\x1f")): g for k, g in metrics.groupby(keys)})
    return _GROUPS[id(metrics)][1]


def deltas(
    metrics: pd.DataFrame,
    experiment: str,
    arm: str,
    baseline_arm: str = "baseline",
    metric: str = "pass@1",
    model: str | None = None,
    eval_task: str | None = None,
) -> pd.DataFrame:
    """Per-seed improvement over the same seed's baseline run (footnote 1): seed, value, run_id, baseline.

    Seeds without a baseline run are dropped (a delta needs both)."""
    a = select(metrics, experiment, arm, metric, model, eval_task)
    b = select(metrics, experiment, baseline_arm, metric, model, eval_task)
    j = a.merge(b, on="seed", suffixes=("", "_base"))
    j["baseline"] = j["value_base"]
    j["value"] = j["value"] - j["value_base"]
    j["run_id"] = j["run_id"] + ";" + j["run_id_base"]
    return j[["seed", "value", "run_id", "baseline"]]


def run_ids_of(frame: pd.DataFrame) -> list[str]:
    return sorted({r for ids in frame.get("run_id", []) for r in str(ids).split(";") if r})


def n_eval_of(metrics: pd.DataFrame, run_ids: list[str]) -> float:
    if metrics.empty or not run_ids:
        return DEFAULT_N_EVAL
    m = metrics[(metrics.metric == "n_eval") & metrics.run_id.isin(run_ids)]
    return float(m.value.mean()) if len(m) else DEFAULT_N_EVAL


def degraded(samples: pd.DataFrame, baseline_run: str, method_run: str) -> int | None:
    """Problems correct under the baseline and wrong under the method (greedy, sample 0), joined on id."""
    if samples.empty:
        return None
    s = samples[samples.get("sample", 0) == 0] if "sample" in samples else samples
    base = s[s.run_id == baseline_run].set_index("id")["correct"]
    meth = s[s.run_id == method_run].set_index("id")["correct"]
    if base.empty or meth.empty:
        return None
    both = base.to_frame("b").join(meth.to_frame("m"), how="inner")
    return int((both.b.astype(bool) & ~both.m.astype(bool)).sum())


def mechanism_pairs(m: pd.DataFrame, experiment: str = "mechanism") -> list[tuple[str, str, int]]:
    """(baseline run, S0 run, seed) of every seed of the mechanism experiment."""
    b, s = select(m, experiment, "baseline"), select(m, experiment, "s0")
    j = b.merge(s, on="seed", suffixes=("_b", "_s"))
    return [(r.run_id_b.split(";")[0], r.run_id_s.split(";")[0], int(r.seed)) for r in j.itertuples()]
