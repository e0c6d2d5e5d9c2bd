"""selection.split (issue 12): LoRA's best config selected on the evaluated problems (default, as the paper) or
on a held-out slice of the training problems (HumanEval 64-79), which then never reaches training; Table 1
shows both picks, so the size of the selection bias is visible."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import run
from s0.report.tables import build_tables, load_records
from s0.run import pipeline, records
from s0.run.config import ConfigError, MethodConfig, ModelConfig, TaskConfig
from s0.run.lookup import select
from s0.run.plan import expand, format_plan

LORA = "lora_r24_lr5e-4"
QWEN = "Qwen3.5-4B (GatedDeltaNet)"
EVAL_ROW = "LoRA (best config, selected on eval problems)"
HELD_ROW = "LoRA (best config, selected on held-out train problems 64-79)"


def planned(compose, tmp_path: Path, *overrides: str):
    args = [
        "debug=smoke",
        f"paths.results={tmp_path / 'runs'}",
        f"paths.cache={tmp_path / 'cache'}",
        *overrides,
    ]
    cfg, plain = run.to_run_config(compose(args))
    groups = (run.load_group("method", MethodConfig), run.load_group("model", ModelConfig),
              run.load_group("task", TaskConfig, resolve_with={"paths": plain["paths"]}))  # fmt: skip
    return cfg, expand(cfg, *groups)


# ------------------------------------------------------------------------------------------------ planning
def test_heldout_runs_have_their_own_ids_and_the_plan_says_so(compose, tmp_path: Path) -> None:
    _, plain = planned(compose, tmp_path, "experiment=main_qwen", "seed=42")
    _, held = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "selection.split=heldout")
    ids = {r.arm: r.run_id for r in plain}
    held_ids = {r.arm: r.run_id for r in held}
    assert held_ids["baseline"] == ids["baseline"]  # trains nothing: one baseline serves both splits
    assert all(held_ids[a] != ids[a] for a in ids if a != "baseline")  # s0 too: it trained without 64-79
    flags = {r.arm: (r.selection.heldout, r.selection.evaluate) for r in held}
    assert flags["s0"] == (16, False) and flags[LORA] == (16, True) and flags["baseline"] == (0, False)
    out = format_plan(held)
    assert "selection split=heldout: the last 16 training problems (HumanEval 64-79) are held out" in out
    assert f"{LORA}" in out and "heldout=16+selection_eval" in out
    assert "selection split=eval: best config selected on the evaluated problems" in format_plan(plain)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=main_falcon", "selection.split=heldout"], "selection.split=heldout: experiment 'main_falcon' has no selection block"),
        (["experiment=main_qwen", "selection.split=heldout", "selection.heldout=80"], "selection.heldout=80: humaneval has 80 training problems"),
        (["experiment=main_qwen", "selection.split=heldout", "selection.heldout=0"], "selection.heldout: a positive number"),
        (["experiment=main_qwen", "selection.split=train"], "selection.split: 'train' is not one of eval, heldout"),
    ],
)  # fmt: skip
def test_selection_mistakes_are_one_line(compose, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        run.to_run_config(compose(overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- collection
def collected_ids(compose, tmp_path: Path, monkeypatch, *overrides: str) -> tuple[list[str], dict]:
    """The problem ids one s0 run's collection generated for and trained on (every training problem offered:
    limit.n_train=null), with stub generation and grading; and the collection's cache key."""
    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0", "limit.n_train=null",
                        *overrides)  # fmt: skip
    r = runs[0]
    monkeypatch.setattr(pipeline, "check_prompts", lambda *a, **k: None)
    monkeypatch.setattr(
        pipeline, "generate", lambda m, t, prompts, spec, *a, **k: [["x"] * spec.samples] * len(prompts)
    )
    pipe = pipeline.Pipeline(cfg, progress=False)
    pipe.model, pipe.tokenizer = torch.nn.Linear(1, 1), None
    task = pipeline.task_for(r.task)
    seen: list[str] = []

    def score(examples, completions, **kw):
        seen.extend(ex.id for ex in examples)
        return [{"correct": True} for _ in examples]

    task.score = score
    pairs, _ = pipe.collect(r, task)
    assert sorted({p["id"] for p in pairs}) == sorted(set(seen))
    return sorted(set(seen), key=lambda i: int(i.split("/")[1])), pipe.cache_key("collect", r, task.VERSION)


def test_the_heldout_slice_never_reaches_collection(compose, tmp_path: Path, monkeypatch) -> None:
    everything, key = collected_ids(compose, tmp_path, monkeypatch)
    assert everything == [f"HumanEval/{i}" for i in range(80)]
    kept, held_key = collected_ids(compose, tmp_path, monkeypatch, "selection.split=heldout")
    assert kept == [f"HumanEval/{i}" for i in range(64)]  # 64-79 are the selection slice
    assert held_key != key  # and the collection cache of the eval split is never reused


# ----------------------------------------------------------------------------------------------- a smoke run
class UntrainedAdapter:
    """Stands in for training (tested in test_train): evaluation runs the frozen tiny model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def active(self):
        return contextlib.nullcontext()

    def deactivate(self) -> None:
        pass

    def num_trainable(self) -> int:
        return 0


def stub_slow_stages(monkeypatch, train: bool) -> None:
    """The preflight checks (test_preflight; minutes on a busy CPU) and, with `train`, collection and training."""
    monkeypatch.setattr(pipeline, "check_logit_change", lambda *a, **k: {"stubbed": True})
    monkeypatch.setattr(pipeline, "check_generation", lambda *a, **k: {"stubbed": True})
    if not train:
        return

    def fake_train(self, run, pairs, run_dir):
        records.write_json(run_dir / "train.json", {"n_pairs": len(pairs)})
        return UntrainedAdapter(self.model)

    monkeypatch.setattr(pipeline.Pipeline, "collect", lambda self, run, task: ([{"id": "HumanEval/0"}], {}))
    monkeypatch.setattr(pipeline.Pipeline, "train", fake_train)


def run_heldout_lora(compose, tmp_path: Path) -> None:
    """A tiny LoRA run under selection.split=heldout is also evaluated on the held-out slice (smoke caps it at
    limit.n_eval=4: 64-67); those scores are metrics rows with split "selection", never read as eval values."""
    cfg, runs = planned(
        compose, tmp_path, "experiment=main_qwen", "seed=42", f"arm={LORA}", "selection.split=heldout"
    )
    pipeline.run_all(runs, cfg, progress=False)
    run_dir = tmp_path / "runs" / runs[0].run_id
    assert [r["id"] for r in records.read_jsonl(run_dir / "samples_selection.jsonl")] == [
        f"HumanEval/{i}" for i in range(64, 68)
    ]
    assert [r["id"] for r in records.read_jsonl(run_dir / "samples.jsonl")] == [
        f"HumanEval/{i}" for i in range(80, 84)
    ]
    assert json.loads((run_dir / "metrics.json").read_text())["selection"]["n_eval"] == 4.0
    m = records.load_results(tmp_path / "runs").metrics
    sel = m[m.split == "selection"]
    assert set(sel.metric) >= {"pass@1", "n_eval", "format_failure"} and set(sel.run_id) == {runs[0].run_id}
    assert set(m.selection_split) == {"heldout"}
    assert select(m, "main_qwen", LORA).empty  # a heldout run is not an eval-split run
    assert select(m, "main_qwen", LORA, "n_eval", selection_split="heldout").value.tolist() == [4.0]
    assert select(
        m, "main_qwen", LORA, "n_eval", split="selection", selection_split="heldout"
    ).value.tolist() == [4.0]


def test_selection_scores_are_recorded_under_the_selection_split(
    compose, tmp_path: Path, monkeypatch
) -> None:
    stub_slow_stages(monkeypatch, train=True)
    run_heldout_lora(compose, tmp_path)


@pytest.mark.slow
def test_selection_scores_from_a_trained_smoke_run(compose, tmp_path: Path, monkeypatch) -> None:
    """The same through real collection and LoRA training (about 35 s on a busy CPU)."""
    stub_slow_stages(monkeypatch, train=False)
    run_heldout_lora(compose, tmp_path)


# ---------------------------------------------------------------------------------------------- Table 1
def write_run(root: Path, run_id: str, arm: str, seed: int, value: float, held: float | None = None,
              heldout: bool = False) -> None:  # fmt: skip
    """A finished main_qwen run as the pipeline writes it: `held` is its score on the held-out slice (a
    selection arm of a heldout run), `heldout` marks a run trained without the slice."""
    d = root / run_id
    method = "baseline" if arm == "baseline" else ("s0" if arm == "s0" else "lora")
    records.write_json(d / "run.json", {
        "experiment": "main_qwen", "arm": arm, "seed": seed,
        "model": {"name": "qwen3_5_4b", "family": "qwen3_5", "weights": "hub", "hub_id": None},
        "method": {"name": method, "alpha": 0.07, "lr": 5e-4, "steps": 50, "r": 24},
        "task": {"name": "humaneval"}, "eval_task": {"name": "humaneval"}, "eval": {"mode": "greedy"},
        "selection": {"split": "heldout", "heldout": 16, "evaluate": held is not None} if heldout else {},
    })  # fmt: skip
    metrics = {"pass@1": value, "n_eval": 84.0}
    if held is not None:
        metrics["selection"] = {"pass@1": held, "n_eval": 16.0}
    records.write_json(d / "metrics.json", metrics)
    records.write_jsonl(d / "samples.jsonl", [])
    records.add_membership(d, "main_qwen", arm)
    records.mark_done(d, {})


@pytest.fixture
def both_splits(tmp_path: Path) -> Path:
    """The eval problems favour r24/5e-4 (70 vs 60); the held-out slice favours r16/1e-4 (55 vs 40), whose
    heldout runs score 58 on 80-163 against r24's 65."""
    for seed in (42, 7, 123):
        write_run(tmp_path, f"b{seed}", "baseline", seed, 50.0)
        write_run(tmp_path, f"s{seed}", "s0", seed, 72.0)
        write_run(tmp_path, f"e-r24-{seed}", LORA, seed, 70.0 + seed % 2)
        write_run(tmp_path, f"e-r16-{seed}", "lora_r16_lr1e-4", seed, 60.0)
        write_run(tmp_path, f"h-s0-{seed}", "s0", seed, 10.0, heldout=True)  # must not reach the S0 row
        write_run(tmp_path, f"h-r24-{seed}", LORA, seed, 65.0, held=40.0, heldout=True)
        write_run(
            tmp_path, f"h-r16-{seed}", "lora_r16_lr1e-4", seed, 58.0, held=55.0 + seed % 2, heldout=True
        )
    return tmp_path


def test_table1_shows_both_picks(both_splits: Path) -> None:
    t1 = build_tables(load_records(both_splits), only=["table1"])[0]
    ev, held = t1.cell(EVAL_ROW, QWEN), t1.cell(HELD_ROW, QWEN)
    assert ev.mean == pytest.approx(70 + 2 / 3) and all(r.startswith("e-r24-") for r in ev.run_ids)
    assert held.mean == 58.0 and sorted(held.run_ids) == [f"h-r16-{s}" for s in (123, 42, 7)]
    assert held.status == "no paper value"  # the paper selects on the eval problems only
    assert t1.cell("S0 (ours)", QWEN).mean == 72.0 and t1.cell("Baseline", QWEN).mean == 50.0
    assert (f"LoRA picks: {QWEN}: {LORA} on the eval problems, lora_r16_lr1e-4 on held-out train problems "
            "64-79; FalconH1-7B (Mamba-2): none ran on the eval problems.") in t1.full_caption  # fmt: skip
    assert any(n.startswith(f"{QWEN}: {HELD_ROW} is lora_r16_lr1e-4, the highest mean pass@1 on held-out train "
                            "problems 64-79 of the 2 of 4 LoRA arms with runs (lora_r16_lr1e-4 55.7")
               for n in t1.notes)  # fmt: skip
    assert "S0 − LoRA and its Welch test compare with the eval-selected row" in t1.full_caption
    csv = pd.read_csv(pd.io.common.StringIO(t1.to_csv()))
    assert {EVAL_ROW, HELD_ROW} <= set(csv.row)
    md = t1.to_markdown()
    assert f"| {HELD_ROW} |" in md and "58.0 ± 0.0 (n=3)" in md


def test_without_heldout_runs_table1_has_one_lora_row(both_splits: Path) -> None:
    for d in both_splits.glob("h-*"):
        (d / "done").unlink()
    t1 = build_tables(load_records(both_splits), only=["table1"])[0]
    assert EVAL_ROW in t1.rows and not any("held-out" in r for r in t1.rows)
    assert "held-out train problems" not in t1.full_caption
    assert "Welch test compare with the eval-selected row" not in t1.full_caption


def test_two_heldout_sizes_never_pool_in_one_row(both_splits: Path) -> None:
    from s0.run.lookup import MixedRunsError

    run = json.loads((both_splits / "h-r24-42" / "run.json").read_text())
    run["selection"]["heldout"] = 8
    records.write_json(both_splits / "h-r24-42" / "run.json", run)
    with pytest.raises(MixedRunsError, match=r"selection.heldout 8, 16 would pool into one row"):
        build_tables(load_records(both_splits), only=["table1"])
