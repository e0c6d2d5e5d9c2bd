"""experiment=expressiveness (issue 15; paper Sec 2 / Sec 8 hypothesis): the plan lists baseline, S0 and a LoRA
whose rank is matched to each model's S0 count, with the kind's alpha; the ranks in the file are the nearest to
each model's S0 count recomputed on the meta device; the table and figure are pure functions of the records and
keep kinds apart; a smoke run goes end to end on the tiny models of every kind."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import run
from s0.adapters.kinds import KINDS, recurrent_layers
from s0.models import TINY_ARCH, build_model, n_recurrent_layers
from s0.report.figures import FIGURES, fig_expressiveness
from s0.report.table_expressiveness import KIND_LABEL, expressiveness_rows, table_expressiveness
from s0.report.tables import all_tables
from s0.run import records
from s0.run.config import ConfigError, MethodConfig, ModelConfig, TaskConfig
from s0.run.pipeline import run_all
from s0.run.plan import expand, format_plan
from s0.run.records import Results

EXP = run.CONF / "experiment" / "expressiveness.yaml"
DOC = yaml.safe_load(EXP.read_text())
MODELS = DOC["models"]
ARMS = ["baseline", "s0", "lora"]
# S0 alpha per kind (App E): delta-rule kinds GDN's 0.07, SSM-style kinds Mamba-2's 0.65
ALPHA = {"qwen3_5": 0.07, "kimi_linear": 0.07, "falcon_h1": 0.65, "mamba": 0.65, "falcon_mamba": 0.65,
         "recurrent_gemma": 0.65}  # fmt: skip


def groups() -> tuple[dict, dict, dict]:
    return (run.load_group("method", MethodConfig), run.load_group("model", ModelConfig),
            run.load_group("task", TaskConfig, resolve_with={"paths": {"data_root": None}}))  # fmt: skip


def planned(compose, extra: list[str] = ()):
    cfg, _ = run.to_run_config(compose(["experiment=expressiveness", *extra]))
    return cfg, expand(cfg, *groups())


def test_every_model_of_the_experiment_has_a_conf_file():
    known = set(run.load_group("model", ModelConfig))
    assert not [m for m in MODELS if m not in known], "conf/model/ lacks a model the experiment sweeps"


def test_plan_lists_three_arms_x_three_seeds_per_model_with_per_model_rank_and_alpha(compose):
    cfg, runs = planned(compose)
    assert cfg.paper_ref and len(runs) == len(MODELS) * 3 * 3 == 54
    assert len({r.run_id for r in runs}) == len(runs)
    assert {(r.model.name, r.arm, r.seed) for r in runs} == {(m, a, s) for m in MODELS for a in ARMS
                                                             for s in (42, 7, 123)}  # fmt: skip
    ranks = DOC["arms"]["lora"]["per_model"]
    for r in runs:
        assert r.protocol.name == "reference" and r.eval_task.name == "humaneval"
        if r.arm == "s0":  # main_qwen's S0 hyperparameters (App A Table 4), alpha per kind
            m = r.method
            assert (m.lr, m.steps, m.l2, m.alpha) == (1e-3, 20, 5e-4, ALPHA[r.model.family])
        if r.arm == "lora":  # the per-model entry reached the run (not the arm's r 24 placeholder)
            assert r.method.r == ranks[r.model.name]["r"] and r.method.r != 24
    assert "r=51 " in format_plan(runs) and "r=1 " in format_plan(
        runs
    )  # the plan=true listing shows each rank


def test_per_model_key_naming_no_model_is_refused(compose):
    with pytest.raises(ConfigError, match="per_model: unknown model 'mamba_2_8B'"):
        planned(compose, ["+arms.lora.per_model.mamba_2_8B={r: 2}"])


def lora_params_per_rank(model, targets: list[str]) -> int:
    """LoRA adds r * (in + out) per targeted Linear: the count for rank 1."""
    return sum(m.in_features + m.out_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets)  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_lora_rank_in_the_file_is_the_nearest_to_the_s0_count(name):
    """Recomputed on the meta device from conf/model/<name>.yaml; the file's comment has the same arithmetic."""
    cfg = run.load_group("model", ModelConfig)[name]
    net = build_model(cfg.family, cfg.arch, weights="meta")
    s0 = sum(layer.numel for layer in recurrent_layers(net))
    per_rank = lora_params_per_rank(net, cfg.lora_targets)
    assert s0 > 0 and per_rank > 0
    nearest = min(range(1, 513), key=lambda r: abs(r * per_rank - s0))
    assert DOC["arms"]["lora"]["per_model"][name]["r"] == nearest


# ------------------------------------------------------------------------------------- table and figure
def synthetic() -> Results:
    """Records of three tiny models, one per kind, where the S0 − LoRA gap differs by kind: GDN +10 pp,
    KDA +4 pp, Mamba-1 −6 pp. A table that pooled kinds or swapped rows would show other gaps."""
    spec = {  # model, family, S0 params, LoRA params, r, baseline, S0, LoRA (per seed)
        "tiny_qwen3_5": ("qwen3_5", 3072, 3072, 4, [20, 22, 21], [40, 42, 41], [30, 32, 31]),
        "tiny_kimi_linear": ("kimi_linear", 1536, 1760, 2, [10, 10, 11], [24, 26, 25], [20, 22, 21]),
        "tiny_mamba": ("mamba", 1536, 2040, 2, [5, 6, 5], [10, 12, 11], [16, 18, 17]),
    }
    rows = []
    for model, (family, n_s0, n_lora, r, base, s0, lora) in spec.items():
        for arm, vals, n, rank in (
            ("baseline", base, 0, None),
            ("s0", s0, n_s0, None),
            ("lora", lora, n_lora, r),
        ):
            for seed, v in zip((42, 7, 123), vals):
                rid = f"{model}-{arm}-{seed}"
                common = dict(run_id=rid, experiment="expressiveness", arm=arm, seed=seed, model=model,
                              family=family, weights="random", smoke=True, hub_id="", r=rank,
                              protocol="reference", eval_task="humaneval", split="eval")  # fmt: skip
                rows.append({**common, "metric": "pass@1", "value": float(v)})
                rows.append({**common, "metric": "trainable_params", "value": float(n)})
                rows.append({**common, "metric": "n_eval", "value": 84.0})
    return Results(pd.DataFrame(rows), pd.DataFrame())


def test_rows_keep_each_kind_apart_and_read_counts_from_the_records():
    rows = {g.model: g for g in expressiveness_rows(synthetic().metrics)}
    assert {m: round(g.gap, 6) for m, g in rows.items()} == {"tiny_qwen3_5": 10.0, "tiny_kimi_linear": 4.0,
                                                             "tiny_mamba": -6.0}  # fmt: skip
    assert {m: g.kind for m, g in rows.items()} == {"tiny_qwen3_5": "GatedDeltaNet",
                                                    "tiny_kimi_linear": "Kimi Delta Attention",
                                                    "tiny_mamba": "Mamba-1"}  # fmt: skip
    assert list(rows)[-1] == "tiny_mamba"  # matrix states first
    assert [rows[m].structure for m in ("tiny_qwen3_5", "tiny_kimi_linear", "tiny_mamba")] == [
        "matrix", "matrix", "diagonal"]  # fmt: skip
    # tiny_qwen3_5: 6 GDN layers (TINY_ARCH), tiny_kimi_linear 3 KDA, tiny_mamba 3 Mamba-1 layers
    assert rows["tiny_qwen3_5"].entries_per_layer == 3072 / 6
    assert rows["tiny_kimi_linear"].entries_per_layer == 1536 / 3 and rows["tiny_mamba"].lora_r == 2


def test_recurrent_gemma_counts_only_recurrent_blocks():
    assert n_recurrent_layers("recurrent_gemma", TINY_ARCH["recurrent_gemma"]) == 2  # [rec, rec, attn]
    arch = yaml.safe_load((run.CONF / "model" / "recurrentgemma_2b.yaml").read_text())["arch"]
    assert n_recurrent_layers("recurrent_gemma", arch) == 18  # 26 layers, every third is attention


def test_every_registered_family_gets_its_kind_and_recurrent_layer_count():
    """Kind, structure and layer count come from the registries, so a family added after this table (Jamba,
    Qwen3-Next: attention between their recurrent layers) is labelled and counted without a line here."""
    assert set(KIND_LABEL) == set(KINDS)
    rows = []
    for model, family in (("tiny_jamba", "jamba"), ("tiny_qwen3_next", "qwen3_next")):
        common = dict(experiment="expressiveness", seed=1, model=model, family=family, r=None)
        rows.append(
            {**common, "run_id": f"{model}-s0", "arm": "s0", "metric": "trainable_params", "value": 96.0}
        )
    gaps = {g.model: g for g in expressiveness_rows(pd.DataFrame(rows))}
    assert (gaps["tiny_jamba"].kind, gaps["tiny_jamba"].structure) == ("Mamba-1", "diagonal")
    assert (gaps["tiny_qwen3_next"].kind, gaps["tiny_qwen3_next"].structure) == ("GatedDeltaNet", "matrix")
    for g in gaps.values():  # 4 decoder layers each, one of them attention
        built = build_model(g.family, TINY_ARCH[g.family], weights="meta")
        assert g.state_layers == len(recurrent_layers(built)) == 3
        assert g.entries_per_layer == 32


def test_table_shows_gap_p_counts_and_states_the_hypothesis():
    t = table_expressiveness(synthetic())
    assert "table_expressiveness" in all_tables()
    assert t.cell("tiny_qwen3_5", "S0 − LoRA (pp)").mean == pytest.approx(10.0)
    assert t.cell("tiny_mamba", "S0 − LoRA (pp)").mean == pytest.approx(-6.0)
    assert sorted(t.cell("tiny_kimi_linear", "LoRA (%)").values) == [20, 21, 22]  # sorted by seed in select
    p = t.cell("tiny_qwen3_5", "p (Welch)").mean
    assert 0 < p < 0.01  # 41 ± 1 vs 31 ± 1, n = 3 each
    assert all(c.status == "no paper value" for c in t.cells)
    assert t.static["State"] == {
        "tiny_qwen3_5": "matrix",
        "tiny_kimi_linear": "matrix",
        "tiny_mamba": "diagonal",
    }
    assert t.static["LoRA r (params)"]["tiny_mamba"] == "r2 (2,040)"
    md = t.to_markdown()
    assert "Sec 8" in md and "no numbers for this experiment" in md and "GatedDeltaNet" in md


def test_table_and_figure_without_runs_say_missing():
    empty = Results(pd.DataFrame(), pd.DataFrame())
    t = table_expressiveness(empty)
    assert {c.status for c in t.cells} == {"missing"}
    assert "missing" in " ".join(x.get_text() for ax in fig_expressiveness(empty).axes for x in ax.texts)


def test_figure_plots_gap_against_state_entries_log_x_matrix_and_diagonal_apart(tmp_path: Path):
    assert FIGURES["fig_expressiveness"] is fig_expressiveness
    fig = fig_expressiveness(synthetic())
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["matrix state", "diagonal state"]
    # matrix (circles): GDN (512, +10) and KDA (512, +4); diagonal (squares): Mamba-1 (512, -6)
    drawn = sorted((line.get_marker(), float(x), round(float(y), 6)) for line in ax.get_lines()
                   if line.get_marker() in ("o", "s") for x, y in zip(line.get_xdata(), line.get_ydata()))  # fmt: skip
    assert drawn == [("o", 512.0, 4.0), ("o", 512.0, 10.0), ("s", 512.0, -6.0)]
    fig.savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 5_000


# --------------------------------------------------------------------------------------------- smoke
# falcon_mamba_7b and mamba_2_8b share tiny_mamba in smoke mode, so one of them is enough.
SMOKE_OK = [m for m in MODELS if m != "falcon_mamba_7b"]


def smoke(compose, tmp_path: Path, models: list[str], arm: str | None = None):
    overrides = ["experiment=expressiveness", "debug=smoke", "seed=42", f"models=[{','.join(models)}]",
                 f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}"]  # fmt: skip
    if arm:
        overrides.append(f"arm={arm}")
    cfg, plain = run.to_run_config(compose(overrides))
    methods, model_group, _ = groups()
    tasks = run.load_group("task", TaskConfig, resolve_with={"paths": plain["paths"]})
    runs = expand(cfg, methods, model_group, tasks)
    run_all(runs, cfg, progress=False)
    return runs, records.load_results(tmp_path / "runs")


@pytest.mark.slow
def test_smoke_runs_end_to_end_on_the_tiny_model_of_every_kind(compose, tmp_path: Path):
    """debug=smoke, seed 42: baseline, S0 and LoRA on each model's tiny counterpart; the table reads them back."""
    runs, res = smoke(compose, tmp_path, SMOKE_OK)
    assert len(runs) == len(SMOKE_OK) * 3
    m = res.metrics[(res.metrics.experiment == "expressiveness") & (res.metrics.metric == "pass@1")]
    tiny = {r.model.name for r in runs}
    assert tiny == {
        "tiny_qwen3_5",
        "tiny_falcon_h1",
        "tiny_kimi_linear",
        "tiny_mamba",
        "tiny_recurrent_gemma",
    }
    assert sorted(set(zip(m.model, m.arm))) == sorted({(t, a) for t in tiny for a in ARMS})
    t = table_expressiveness(res)
    assert set(t.rows) == tiny
    for row in t.rows:  # every trained arm recorded its trainable count, so the static columns are filled
        assert t.static["S0 params"][row] != "—" and t.static["LoRA r (params)"][row].startswith("r")
    assert t.cell("tiny_qwen3_5", "S0 − LoRA (pp)").n == 1
    fig_expressiveness(res).savefig(tmp_path / "fig.png")
