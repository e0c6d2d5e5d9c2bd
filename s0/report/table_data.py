"""Record look-ups shared by the tables and figures, on top of s0.run.lookup's `select` (one arm's per-seed
values at one scope: which runs are read is said there): per-seed deltas over the same seed's baseline, degraded
problems, the selection rule's best arm, and the run ids behind them. Pure pandas, no model code.

    deltas(metrics, "main_qwen", "s0")            # seed, value (= s0 - baseline), run_id, baseline, model
    best_lora(metrics, "main_qwen")               # the LoRA arm with the highest mean pass@1 over seeds
"""

from __future__ import annotations

import functools
import math

import pandas as pd
import yaml

from s0.run.lookup import CONF, MixedRunsError, select
from s0.run.records import Results

DEFAULT_N_EVAL = 84  # HumanEval problems 80-163 (Sec 4.2), when the records carry no n_eval
MAIN_SEEDS = [42, 7, 123, 1337, 999, 314, 256, 777, 555, 2024]  # the order Tables 6 and 8 print them in


class MixedProtocolsError(MixedRunsError):
    """Runs made under different protocols (reference, harness: issue 12) would pool into one table cell."""


UNRECORDED = "unrecorded"  # the protocol of records written before runs recorded theirs


def weak_runs(metrics: pd.DataFrame) -> set[str]:
    """Run ids graded in weak sandbox isolation (provenance.json sandbox.weak, issue 14)."""
    if metrics.empty or "sandbox_weak" not in metrics:
        return set()
    weak = metrics["sandbox_weak"].fillna(False).astype(bool)
    return set(metrics.loc[weak, "run_id"].astype(str))


def protocol_by_run(metrics: pd.DataFrame) -> dict[str, str]:
    """run id -> the protocol it was made under ("unrecorded" where its records do not say)."""
    if metrics.empty or "run_id" not in metrics:
        return {}
    col = metrics["protocol"] if "protocol" in metrics else pd.Series(None, index=metrics.index, dtype=object)
    known = col.where(col.notna() & (col.astype(str) != ""), UNRECORDED).astype(str)
    return dict(zip(metrics["run_id"].astype(str), known))


def deltas(
    metrics: pd.DataFrame,
    experiment: str,
    arm: str,
    baseline_arm: str = "baseline",
    metric: str = "pass@1",
    model: str | None = None,
    eval_task: str | None = None,
) -> pd.DataFrame:
    """Per-seed improvement over the same seed's baseline run (footnote 1): seed, value, run_id, baseline,
    model. Seeds without a baseline run are dropped (a delta needs both)."""
    a = select(metrics, experiment, arm, metric, model, eval_task)
    b = select(metrics, experiment, baseline_arm, metric, model, eval_task)
    j = a.merge(b, on="seed", suffixes=("", "_base"))
    j["baseline"] = j["value_base"]
    j["value"] = j["value"] - j["value_base"]
    j["run_id"] = j["run_id"] + ";" + j["run_id_base"]
    return j[["seed", "value", "run_id", "baseline", "model"]]


def run_ids_of(frame: pd.DataFrame) -> list[str]:
    return sorted({r for ids in frame.get("run_id", []) for r in str(ids).split(";") if r})


def models_of(*frames: pd.DataFrame) -> list[str]:
    """Labels of the models behind `frames` that are not the paper's ('' marks the paper's own)."""
    return sorted({str(x) for f in frames for x in f.get("model", []) if isinstance(x, str) and x})


def n_eval_of(metrics: pd.DataFrame, run_ids: list[str]) -> float:
    if metrics.empty or not run_ids:
        return DEFAULT_N_EVAL
    split = metrics["split"].fillna("eval") if "split" in metrics else "eval"
    m = metrics[(metrics.metric == "n_eval") & metrics.run_id.isin(run_ids) & (split == "eval")]
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


# ----------------------------------------------------------------- arms and the selection rule (issue 12)
@functools.cache
def experiment_arms(experiment: str) -> dict[str, dict]:
    """The arms of conf/experiment/<experiment>.yaml ({} when the file is absent)."""
    path = CONF / f"{experiment}.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("arms", {}) if path.exists() else {}


@functools.cache
def selection_arms(experiment: str) -> list[str]:
    """The arms the experiment's `selection` rule chooses among; without one, every LoRA arm."""
    path = CONF / f"{experiment}.yaml"
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    if doc and doc.get("selection", {}).get("arms"):
        return list(doc["selection"]["arms"])
    return [a for a, f in experiment_arms(experiment).items() if f.get("method") == "lora"]


def select_best(
    metrics: pd.DataFrame, experiment: str, arms: list[str], metric: str = "pass@1", **where: str
) -> str | None:
    """`max_mean_over_seeds`: the arm with the highest mean `metric` over its seeds (None if none ran). `where`
    (split, selection_split) goes to `select`: split="selection" picks on the held-out slice (issue 12)."""
    means = {a: select(metrics, experiment, a, metric, **where).value.mean() for a in arms}
    means = {a: v for a, v in means.items() if not math.isnan(v)}
    return max(means, key=means.__getitem__) if means else None


def best_lora(metrics: pd.DataFrame, experiment: str, rank: int | None = None) -> str | None:
    arms = selection_arms(experiment)
    if rank is not None:
        arms = [a for a in arms if experiment_arms(experiment).get(a, {}).get("r") == rank]
    return select_best(metrics, experiment, arms)


def degraded_frame(res: Results, exp: str, arm: str, baseline_arm: str = "baseline", **kw) -> pd.DataFrame:
    """Per-seed degraded counts: seed, value, run_id (seeds whose samples are missing are dropped)."""
    a, b = select(res.metrics, exp, arm, **kw), select(res.metrics, exp, baseline_arm, **kw)
    rows = []
    for _, r in a.merge(b, on="seed", suffixes=("", "_b")).iterrows():
        k = degraded(res.samples, r.run_id_b.split(";")[0], r.run_id.split(";")[0])
        if k is not None:
            rows.append(
                {"seed": r.seed, "value": float(k), "run_id": f"{r.run_id};{r.run_id_b}", "model": r.model}
            )
    return pd.DataFrame(rows, columns=["seed", "value", "run_id", "model"])
