"""The results store: atomic writes, `done` last, and a loader that never reads a partial run."""

from __future__ import annotations

import json
import os

import pytest

from s0.run import records


def make_run(root, run_id: str, done: bool = True, metrics: dict | None = None, arm: str = "s0") -> None:
    d = root / run_id
    run = {
        "experiment": "main_qwen",
        "arm": arm,
        "seed": 42,
        "model": {"name": "tiny_qwen3_5", "family": "qwen3_5", "weights": "random"},
        "method": {
            "name": "s0",
            "alpha": 0.07,
            "alpha_mode": "inference",
            "lr": 1e-3,
            "steps": 20,
            "layers": None,
        },
        "task": {"name": "humaneval"},
        "eval_task": {"name": "humaneval"},
        "eval": {"mode": "greedy"},
    }
    records.write_json(d / "run.json", run)
    records.write_json(d / "metrics.json", metrics or {"pass@1": 50.0, "n_eval": 2.0})
    records.write_jsonl(
        d / "samples.jsonl",
        [{"id": "HumanEval/80", "correct": True}, {"id": "HumanEval/81", "correct": False}],
    )
    records.add_membership(d, "main_qwen", arm)
    if done:
        records.mark_done(d, {})


def test_loader_reads_only_finished_runs(tmp_path):
    make_run(tmp_path, "aaa")
    make_run(tmp_path, "bbb", done=False)
    res = records.load_results(tmp_path)
    assert set(res.metrics["run_id"]) == {"aaa"}
    assert res.unfinished == ["bbb"]
    assert sorted(res.metrics["metric"]) == ["n_eval", "pass@1"]
    row = res.metrics[res.metrics.metric == "pass@1"].iloc[0]
    assert (row.model, row.method, row.alpha, row.seed, row.experiment, row.arm, row.value) == (
        "tiny_qwen3_5", "s0", 0.07, 42, "main_qwen", "s0", 50.0,
    )  # fmt: skip
    assert len(res.samples) == 2 and res.samples.correct.sum() == 1


def test_corrupt_run_is_reported_not_read(tmp_path):
    make_run(tmp_path, "ccc")
    (tmp_path / "ccc" / "metrics.json").write_text("{not json")
    res = records.load_results(tmp_path)
    assert len(res.metrics) == 0
    assert "ccc" in res.corrupt and "ccc" in res.report()


def test_a_run_shared_by_two_experiments_has_a_row_for_each(tmp_path):
    make_run(tmp_path, "ddd")
    records.add_membership(tmp_path / "ddd", "state_offset", "s0")
    res = records.load_results(tmp_path)
    assert sorted(res.metrics[res.metrics.metric == "pass@1"].experiment) == ["main_qwen", "state_offset"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    records.write_json(target, {"a": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(records.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        records.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_the_model_a_run_really_used_is_a_column(tmp_path):
    """Tables keep models apart by these columns (issue 10): a tiny model is a smoke run, a hub model is not."""
    make_run(tmp_path, "tiny")
    make_run(tmp_path, "real")
    run = json.loads((tmp_path / "real" / "run.json").read_text())
    run["model"] = {"name": "qwen3_5_4b", "family": "qwen3_5", "weights": "hub", "hub_id": "Qwen/Qwen3.5-4B",
                    "tiny": "tiny_qwen3_5"}  # fmt: skip
    records.write_json(tmp_path / "real" / "run.json", run)
    m = records.load_results(tmp_path).metrics.drop_duplicates("run_id").set_index("run_id")
    assert m.loc["tiny", ["model", "weights", "hub_id", "smoke"]].tolist() == [
        "tiny_qwen3_5",
        "random",
        "",
        True,
    ]
    assert m.loc["real", ["model", "weights", "hub_id", "smoke"]].tolist() == [
        "qwen3_5_4b", "hub", "Qwen/Qwen3.5-4B", False,
    ]  # fmt: skip
    assert records.is_smoke({"smoke": True, "model": {"name": "qwen3_5_4b"}})  # an explicit flag wins


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_files_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    """Readable by the group under the usual umask, not mkstemp's owner-only 0600 (issue 10)."""
    old = os.umask(umask)
    try:
        make_run(tmp_path, "eee")
        records.write_json(tmp_path / "eee" / "run.json", {"rewritten": True})  # a replace keeps the rule
    finally:
        os.umask(old)
    files = list((tmp_path / "eee").iterdir())  # run.json, metrics.json, samples.jsonl, member-*.json, done
    assert len(files) == 5 and {p.stat().st_mode & 0o777 for p in files} == {mode}


def test_the_protocol_a_run_was_made_under_is_a_column(tmp_path):
    """run.json's protocol (issue 12: "reference" or "harness", or its config group with a name) reaches every
    metrics row; records from before runs recorded it read None, which the tables call "unrecorded"."""
    for run_id, protocol in (
        ("ref", "reference"),
        ("har", {"name": "harness", "prompt": "..."}),
        ("old", None),
    ):
        make_run(tmp_path, run_id)
        if protocol is not None:
            run = json.loads((tmp_path / run_id / "run.json").read_text())
            records.write_json(tmp_path / run_id / "run.json", {**run, "protocol": protocol})
    m = records.load_results(tmp_path).metrics
    by_run = m.groupby("run_id").protocol.agg(lambda s: set(s.fillna("None")))
    assert by_run.to_dict() == {"ref": {"reference"}, "har": {"harness"}, "old": {"None"}}


def test_weak_sandbox_runs_are_a_column(tmp_path):
    """provenance.json's sandbox.weak (s0.run.provenance, issue 14) reaches every metrics row of the run; runs without
    the field (older runs, fixtures) are not weak."""
    make_run(tmp_path, "weak")
    records.write_json(
        tmp_path / "weak" / "provenance.json", {"sandbox": {"isolation": "weak", "weak": True}}
    )
    make_run(tmp_path, "strong")
    records.write_json(
        tmp_path / "strong" / "provenance.json", {"sandbox": {"isolation": "required", "weak": False}}
    )
    make_run(tmp_path, "old")  # no provenance.json
    m = records.load_results(tmp_path).metrics
    assert m.groupby("run_id").sandbox_weak.agg(set).to_dict() == {
        "weak": {True},
        "strong": {False},
        "old": {False},
    }


def test_selection_scores_are_rows_of_their_own_split(tmp_path):
    """metrics.json's "selection" (the held-out training slice, selection.split=heldout, issue 12) becomes rows
    with split "selection", never rows of the eval split; the run says it was trained without the slice."""
    make_run(
        tmp_path,
        "held",
        metrics={"pass@1": 50.0, "n_eval": 84.0, "selection": {"pass@1": 25.0, "n_eval": 16.0}},
    )
    run = json.loads((tmp_path / "held" / "run.json").read_text())
    records.write_json(
        tmp_path / "held" / "run.json", {**run, "selection": {"split": "heldout", "heldout": 16}}
    )
    make_run(tmp_path, "plain")
    m = records.load_results(tmp_path).metrics
    held = m[m.run_id == "held"].set_index(["split", "metric"]).value.to_dict()
    assert held == {("eval", "pass@1"): 50.0, ("eval", "n_eval"): 84.0,
                    ("selection", "pass@1"): 25.0, ("selection", "n_eval"): 16.0}  # fmt: skip
    assert set(m[m.run_id == "held"].selection_split) == {"heldout"} and set(
        m[m.run_id == "held"].heldout
    ) == {16}
    assert set(m[m.run_id == "plain"].split) == {"eval"} and set(m[m.run_id == "plain"].selection_split) == {
        "eval"
    }
