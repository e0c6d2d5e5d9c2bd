"""The mechanistic analyses of Sec 6: persistence, first-character divergence, and the linear probe.

    p = persistence(model, tokenizer, adapter, prompts)          # Sec 6.2, KL(tuned || zero state) per position
    d = divergence_from_samples(res.samples, base_ids, s0_ids)    # Sec 6.3, Fig 1b, Fig 4 (records only)
    f = probe_features(model, tokenizer, prompts, adapter)        # App H: states at the last prompt token
    r = probe(f, labels)                                          # PCA-64 + logistic regression, 5-fold AUC
    write_analysis(run_dir, persistence=p, divergence=d, probe=r) # records beside the S0 run
    mechanism_pairs(res.metrics)                                  # (baseline run, S0 run, seed) of each seed
    run_mechanism("results/runs")                                 # all of it for experiment=mechanism

Shapes (documented in each dataclass):
    Persistence.per_position  one row per (prompt, position): prompt, position, rel_position, kl, kl_ratio
    Divergence.flips          one row per FAIL-to-PASS flip: id, seed, position, length, rel_position
    ProbeResult.per_layer     one row per (source, layer): source in {recurrent, residual}, layer, auc, ...

`adapter` is anything with `active()` and `inactive()` context managers (s0.adapters.Adapter): the tuned
distribution is the model under `adapter.active()`, the zero-state one under `adapter.inactive()`.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s0 import stats
from s0.run import records
from s0.run.lookup import select

EARLY_WINDOW = 0.10  # "within the first 10% of the completion" (Sec 6.3)


def _inactive(adapter: Any):
    return (
        adapter.inactive()
        if adapter is not None and hasattr(adapter, "inactive")
        else contextlib.nullcontext()
    )


def _active(adapter: Any):
    return adapter.active() if adapter is not None else contextlib.nullcontext()


def _encode(tokenizer, prompt: str, max_length: int, device):
    import torch  # torch only where a model runs: tables and figures import this module without it

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-max_length:]
    return torch.tensor([ids], device=device)  # (1, T)


# ------------------------------------------------------------------------------------------ persistence
@dataclass
class Persistence:
    """Direct influence of the tuned state on the next-token distribution along each prompt (Sec 6.2).

    per_position: one row per (prompt, position) with prompt (index), position (token index, 0-based),
    rel_position (position / (T-1)), kl (KL(tuned || zero state), nats) and kl_ratio (kl / kl at position 0).
    final_ratio: median over prompts of kl_ratio at the last prompt token (a fraction; the paper prints 0.03%).
    """

    per_position: pd.DataFrame
    final_ratio: float

    def summary(self) -> dict[str, float]:
        last = self.per_position.groupby("prompt").tail(1)
        return {"final_kl_ratio_pct": 100 * self.final_ratio, "n_prompts": float(last.shape[0]),
                "mean_final_kl_ratio_pct": 100 * float(last.kl_ratio.mean()),
                "mean_first_kl": float(self.per_position.groupby("prompt").head(1).kl.mean())}  # fmt: skip


def kl_per_position(logits_p, logits_q):
    """KL(p || q) at every position of (T, V) logits -> (T,), in nats, computed in float64."""
    import torch.nn.functional as F

    lp, lq = F.log_softmax(logits_p.double(), -1), F.log_softmax(logits_q.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)


def persistence(model, tokenizer, adapter, prompts: list[str], max_length: int = 2048) -> Persistence:
    """KL between next-token distributions with the tuned state and with the zero state, per prompt position."""
    import torch

    with torch.no_grad():
        return _persistence(model, tokenizer, adapter, prompts, max_length)


def _persistence(model, tokenizer, adapter, prompts: list[str], max_length: int) -> Persistence:
    device = next(model.parameters()).device
    rows = []
    for i, prompt in enumerate(prompts):
        ids = _encode(tokenizer, prompt, max_length, device)
        with _active(adapter):
            tuned = model(input_ids=ids).logits[0]  # (T, V)
        with _inactive(adapter):
            zero = model(input_ids=ids).logits[0]
        kl = kl_per_position(tuned, zero).cpu().numpy()
        first = kl[0] if kl[0] > 0 else np.nan
        n = len(kl)
        for t, v in enumerate(kl):
            rows.append({"prompt": i, "position": t, "rel_position": t / max(n - 1, 1),
                         "kl": float(v), "kl_ratio": float(v / first)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["prompt", "position", "rel_position", "kl", "kl_ratio"])
    finals = frame.groupby("prompt").tail(1).kl_ratio
    return Persistence(frame, float(finals.median()) if len(finals) else math.nan)


# ------------------------------------------------------------------------------------------- divergence
@dataclass
class Divergence:
    """First-character divergence of FAIL-to-PASS flips (Sec 6.3, Fig 1b, Fig 4).

    flips: one row per flip (a problem wrong under the baseline and right under S0, same seed): id, seed,
    position (first character where the two greedy completions differ), length (characters of the S0
    completion) and rel_position (position / length). sign_test: are positions concentrated inside the first
    `window` of the completion (one-sided sign test against a median of `window`, s0.stats.sign_test)?
    """

    flips: pd.DataFrame
    window: float = EARLY_WINDOW
    sign_test: stats.TestResult | None = None
    identical: int = 0  # flips whose completions are equal (a non-deterministic judge); not in `flips`

    @property
    def n_flips(self) -> int:
        return len(self.flips)

    def summary(self) -> dict[str, float]:
        f, n = self.flips, max(len(self.flips), 1)
        return {
            "n_flips": float(len(f)), "n_pos0": float((f.position == 0).sum()),
            "share_pos0_pct": 100 * float((f.position == 0).sum()) / n,
            "n_first_window": float((f.rel_position < self.window).sum()),
            "share_first_window_pct": 100 * float((f.rel_position < self.window).sum()) / n,
            "mean_rel_position_pct": 100 * float(f.rel_position.mean()) if len(f) else math.nan,
            "median_rel_position_pct": 100 * float(f.rel_position.median()) if len(f) else math.nan,
            "sign_test_p": self.sign_test.pvalue if self.sign_test else math.nan,
        }  # fmt: skip


def first_difference(a: str, b: str) -> int | None:
    """Index of the first character where `a` and `b` differ (the shorter length if one extends the other)."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def divergence(baseline: pd.DataFrame, tuned: pd.DataFrame, window: float = EARLY_WINDOW) -> Divergence:
    """Flips between two greedy evaluations given as frames with id, completion, correct (and seed)."""
    on = ["id", "seed"] if "seed" in baseline and "seed" in tuned else ["id"]
    j = baseline.merge(tuned, on=on, suffixes=("_base", "_s0"))
    j = j[~j.correct_base.astype(bool) & j.correct_s0.astype(bool)]
    rows, identical = [], 0
    for _, r in j.iterrows():
        pos = first_difference(str(r.completion_base), str(r.completion_s0))
        if pos is None:
            identical += 1
            continue
        length = max(len(str(r.completion_s0)), 1)
        rows.append({"id": r.id, "seed": int(r.seed) if "seed" in r else 0, "position": pos,
                     "length": length, "rel_position": pos / length})  # fmt: skip
    flips = pd.DataFrame(rows, columns=["id", "seed", "position", "length", "rel_position"])
    flips = flips.sort_values(["seed", "position", "id"], kind="stable").reset_index(drop=True)
    test = None
    if len(flips) and (flips.rel_position != window).any():
        test = stats.sign_test(flips.rel_position, mu=window, alternative="less")
    return Divergence(flips, window, test, identical)


def divergence_from_samples(samples: pd.DataFrame, pairs: list[tuple[str, str, int]],
                            window: float = EARLY_WINDOW) -> Divergence:  # fmt: skip
    """`pairs` = [(baseline run id, S0 run id, seed)]: greedy sample 0 of each, pooled over the pairs."""
    frames = {"b": [], "t": []}
    for base, tuned, seed in pairs if "run_id" in samples else []:  # records without samples have no columns
        for key, run in (("b", base), ("t", tuned)):
            s = samples[samples.run_id == run]
            if "sample" in s:
                s = s[s["sample"] == 0]
            frames[key].append(s.assign(seed=seed)[["id", "seed", "completion", "correct"]])
    if not pairs or not any(len(f) for f in frames["b"]):
        empty = pd.DataFrame(columns=["id", "seed", "completion", "correct"])
        return divergence(empty, empty, window)
    return divergence(pd.concat(frames["b"]), pd.concat(frames["t"]), window)


def greedy_completions(model, tokenizer, adapter, prompts: list[str], max_new_tokens: int = 512,
                       tuned: bool = True, batch_size: int = 8) -> list[str]:  # fmt: skip
    """Greedy completions with the adapter active (tuned=True) or inactive (the zero state)."""
    from s0.generation import GenerationSpec, generate

    spec = GenerationSpec(max_new_tokens=max_new_tokens, batch_size=batch_size)
    with _active(adapter) if tuned else _inactive(adapter):
        return [row[0] for row in generate(model, tokenizer, prompts, spec, progress=False)]


# ------------------------------------------------------------------------------------------------ probe
@dataclass
class ProbeFeatures:
    """Representations at the last prompt token, one matrix per layer.

    recurrent: GDN/Mamba-2 layer index -> (n_prompts, H*K*V) flattened recurrent state.
    residual:  decoder layer index -> (n_prompts, hidden) residual stream after that layer.
    """

    recurrent: dict[int, np.ndarray]
    residual: dict[int, np.ndarray]


def probe_features(model, tokenizer, prompts: list[str], adapter=None, max_length: int = 2048,
                   dtype: Any = np.float32) -> ProbeFeatures:  # fmt: skip
    """Run each prompt once with a cache and read every recurrent state and hidden state at its last token."""
    import torch

    with torch.no_grad():
        return _probe_features(model, tokenizer, prompts, adapter, max_length, dtype)


def _probe_features(model, tokenizer, prompts, adapter, max_length, dtype) -> ProbeFeatures:
    from s0.adapters.kinds import recurrent_layers

    device = next(model.parameters()).device
    layers = [r.index for r in recurrent_layers(model)]
    rec: dict[int, list] = {i: [] for i in layers}
    res: dict[int, list] = {}
    for prompt in prompts:
        ids = _encode(tokenizer, prompt, max_length, device)
        with _active(adapter):
            out = model(input_ids=ids, use_cache=True, output_hidden_states=True)
        for i in layers:
            state = out.past_key_values.get_recurrent_state(i)  # (1, H, K, V) GDN or (1, H, P, N) Mamba-2
            rec[i].append(state[0].float().flatten().cpu().numpy().astype(dtype))
        for i, h in enumerate(out.hidden_states[1:]):  # hidden_states[0] is the embedding output
            res.setdefault(i, []).append(h[0, -1].float().cpu().numpy().astype(dtype))
    return ProbeFeatures({i: np.stack(v) for i, v in rec.items()}, {i: np.stack(v) for i, v in res.items()})


@dataclass
class ProbeResult:
    """Cross-validated AUC of a linear probe per layer (App H).

    per_layer: one row per (source, layer): source ('recurrent' or 'residual'), layer, auc (mean over folds),
    auc_std, folds, n, n_positive, dims (PCA components used). best: source -> {'layer', 'auc'}.
    """

    per_layer: pd.DataFrame
    best: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        out = {}
        for src, b in self.best.items():
            out[f"{src}_auc"], out[f"{src}_best_layer"] = b["auc"], b["layer"]
        return out


def probe_auc(x: np.ndarray, y: np.ndarray, n_components: int = 64, folds: int = 5, seed: int = 0) -> tuple[float, float, int, int]:  # fmt: skip
    """Mean and std of the ROC AUC over stratified folds of PCA(n_components) -> logistic regression.

    The PCA sits inside the pipeline, so each fold fits it on that fold's training split only (no leakage
    from the held-out problems). Returns (auc, std, folds used, components used); NaN when a class is too rare.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).astype(int)
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return math.nan, math.nan, 0, 0
    n_train = len(y) - math.ceil(len(y) / k)
    dims = max(1, min(n_components, n_train - 1, x.shape[1]))
    pipe = make_pipeline(PCA(dims, random_state=seed), StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(k, shuffle=True, random_state=seed)
    scores = cross_val_score(pipe, x, y, cv=cv, scoring="roc_auc")
    return float(scores.mean()), float(scores.std(ddof=1)) if k > 1 else 0.0, k, dims


def probe(features: ProbeFeatures, labels: np.ndarray | list[int], n_components: int = 64, folds: int = 5,
          seed: int = 0) -> ProbeResult:  # fmt: skip
    """Probe correctness labels (1 = the problem is solved) from every layer of both sources; pick the best."""
    y = np.asarray(labels).astype(int)
    rows = []
    for source, mats in (("recurrent", features.recurrent), ("residual", features.residual)):
        for layer, x in sorted(mats.items()):
            auc, sd, k, dims = probe_auc(x, y, n_components, folds, seed)
            rows.append({"source": source, "layer": layer, "auc": auc, "auc_std": sd, "folds": k,
                         "n": len(y), "n_positive": int(y.sum()), "dims": dims})  # fmt: skip
    frame = pd.DataFrame(
        rows, columns=["source", "layer", "auc", "auc_std", "folds", "n", "n_positive", "dims"]
    )
    best = {}
    for source, g in frame.dropna(subset=["auc"]).groupby("source"):
        top = g.loc[g.auc.idxmax()]
        best[source] = {"layer": float(top.layer), "auc": float(top.auc)}
    return ProbeResult(frame, best)


# -------------------------------------------------------------------------------------------- records
ANALYSIS_DIR = "analysis"


def write_analysis(run_dir: str | Path, meta: dict | None = None, **results: Any) -> Path:
    """Write each result's detail CSV and one summary.json under <run_dir>/analysis/ (atomic writes)."""
    out = Path(run_dir) / ANALYSIS_DIR
    summary: dict[str, Any] = {"meta": meta or {}}
    for name, r in results.items():
        if r is None:
            continue
        detail = {"persistence": "per_position", "divergence": "flips", "probe": "per_layer"}[name]
        records.atomic_write(out / f"{name}.csv", getattr(r, detail).to_csv(index=False, float_format="%.8g"))
        summary[name] = r.summary()
    records.write_json(out / "summary.json", summary)
    return out


def load_analyses(results_dir: str | Path) -> pd.DataFrame:
    """Every <run>/analysis/summary.json as tidy rows: run_id, analysis, key, value (plus meta columns)."""
    rows = []
    root = Path(results_dir)
    for path in sorted(root.glob(f"*/{ANALYSIS_DIR}/summary.json")) if root.exists() else []:
        doc = json.loads(path.read_text())
        meta = doc.pop("meta", {})
        for analysis, values in doc.items():
            for key, value in values.items():
                rows.append({"run_id": path.parent.parent.name, "analysis": analysis, "key": key,
                             "value": float(value), **{f"meta_{k}": v for k, v in meta.items()}})  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "analysis", "key", "value"] if not rows else None)


def load_detail(results_dir: str | Path, name: str) -> pd.DataFrame:
    """One detail CSV (persistence, divergence or probe) of every run that has it, with a run_id column."""
    frames = [pd.read_csv(p).assign(run_id=p.parent.parent.name)
              for p in sorted(Path(results_dir).glob(f"*/{ANALYSIS_DIR}/{name}.csv"))]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------ the experiment
def mechanism_pairs(m: pd.DataFrame, experiment: str = "mechanism") -> list[tuple[str, str, int]]:
    """(baseline run, S0 run, seed) of every seed of the mechanism experiment."""
    b, s = select(m, experiment, "baseline"), select(m, experiment, "s0")
    j = b.merge(s, on="seed", suffixes=("_b", "_s"))
    return [(r.run_id_b.split(";")[0], r.run_id_s.split(";")[0], int(r.seed)) for r in j.itertuples()]


def run_mechanism(results_dir: str | Path, experiment: str = "mechanism", max_prompts: int = 1000,
                  probe_model: str = "base", pca_dims: int = 64, folds: int = 5, device: str = "auto") -> list[Path]:  # fmt: skip
    """All three analyses for every seed of `experiment` (its baseline and s0 arms), written beside each S0 run.

    Loads the model and the saved S0 adapter from the S0 run and the prompts of its evaluation split. The probe
    labels are the baseline's greedy correctness; `probe_model` "base" probes the frozen model (the paper does
    not say which), "tuned" probes it with S0 active. Returns the analysis directories written.
    """
    from types import SimpleNamespace

    from s0.adapters import load_adapter
    from s0.run.config import ModelConfig, TaskConfig
    from s0.run.loading import load_model, resolve_device, task_for

    results = Path(results_dir)
    res = records.load_results(results)
    written = []
    for base_id, s0_id, seed in mechanism_pairs(res.metrics, experiment):
        run = json.loads((results / s0_id / "run.json").read_text())
        model, tok = load_model(SimpleNamespace(model=ModelConfig(**run["model"])), resolve_device(device))
        adapter = load_adapter(results / s0_id / "adapter", model)
        task = task_for(TaskConfig(**run["eval_task"]))
        examples = task.load_split("eval")
        prompts = [task.build_prompt(ex, tok) for ex in examples]
        s = res.samples
        base = (
            s[(s.run_id == base_id) & (s["sample"] == 0 if "sample" in s else True)].set_index("id").correct
        )
        labels = np.array([int(bool(base.get(ex.id, False))) for ex in examples])
        pers = persistence(model, tok, adapter, prompts[:max_prompts])
        feats = probe_features(model, tok, prompts, adapter if probe_model == "tuned" else None)
        result = probe(feats, labels, n_components=pca_dims, folds=folds, seed=seed)
        div = divergence_from_samples(s, [(base_id, s0_id, seed)])
        meta = {"baseline_run": base_id, "s0_run": s0_id, "seed": seed, "probe_model": probe_model,
                "n_prompts": len(prompts), "persistence_prompts": min(len(prompts), max_prompts)}  # fmt: skip
        written.append(write_analysis(results / s0_id, meta, persistence=pers, divergence=div, probe=result))
    return written


def as_dict(result: Any) -> dict:
    """A JSON-able summary of any result above (for logs)."""
    return result.summary() if hasattr(result, "summary") else asdict(result)
