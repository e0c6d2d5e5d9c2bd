"""s0/run/cost.py: plan=true's GPU-time estimate follows the plan's token counts and the measured throughputs in
benchmarks/results, scales to GPU classes not measured (and says so), and a wrong gpu name gets one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from s0.run import cost
from s0.run.config import CollectConfig, ConfigError, EvalConfig, MethodConfig, ModelConfig, TaskConfig
from s0.run.plan import PlannedRun

MEASURED = json.loads((cost.RESULTS / "eval_throughput.json").read_text())


def planned(arm: str = "s0", seed: int = 42, samples: int = 16, max_new_tokens: int = 512, steps: int = 20):
    model = ModelConfig(name="qwen3_5_4b", family="qwen3_5", weights="random", params_b=4.0)
    return PlannedRun(
        experiment="t",
        arm=arm,
        seed=seed,
        model=model,
        method=MethodConfig(name=arm, steps=steps),
        task=TaskConfig(name="humaneval", n_train=80),
        eval_task=TaskConfig(name="humaneval"),
        collect=CollectConfig(samples=samples, max_new_tokens=max_new_tokens),
        eval=EvalConfig(engine="auto"),
    )


def test_estimate_scales_with_samples_tokens_and_steps():
    one = cost.estimate([planned()], "h100")
    (_, collect, train, evaluate) = one.rows[0]
    assert collect > 0 and train > 0 and evaluate > 0
    doubled = cost.estimate([planned(samples=32)], "h100").rows[0]
    assert doubled[1] == pytest.approx(2 * collect) and doubled[3] == pytest.approx(evaluate)
    assert cost.estimate([planned(steps=40)], "h100").rows[0][2] == pytest.approx(2 * train)
    longer = cost.estimate([planned(max_new_tokens=1024)], "h100").rows[0]
    assert longer[1] == pytest.approx(2 * collect)


def test_collection_and_baseline_evaluation_are_counted_once_like_the_caches():
    runs = [planned("s0"), planned("lora"), planned("baseline"), planned("baseline", seed=7), planned(seed=7)]
    rows = cost.estimate(runs, "h100").rows
    assert [r[1] > 0 for r in rows] == [True, False, False, False, True]  # one collection per seed
    assert [r[2] > 0 for r in rows] == [True, True, False, False, True]  # the baseline trains nothing
    assert (
        rows[3][3] == 0
    )  # greedy baseline evaluation of seed 7 = seed 42's (the eval cache ignores the seed)


def test_the_numbers_come_from_the_measurement_files(tmp_path):
    """Decode twice as fast in eval_throughput.json -> half the collection time; a train_cost.json replaces
    the prefill-derived training rate."""
    base = cost.estimate([planned()], "h100", results=cost.RESULTS).rows[0]
    faster = json.loads(json.dumps(MEASURED))
    for engine in faster["run"]["engines"].values():
        engine["decode_tokens_per_s"] *= 2
    (tmp_path / "eval_throughput.json").write_text(json.dumps(faster))
    bill = cost.estimate([planned()], "h100", results=tmp_path)
    assert bill.rows[0][1] == pytest.approx(base[1] / 2)
    assert "derived from prefill" in bill.note
    (tmp_path / "train_cost.json").write_text(json.dumps({
        "s0_qwen3_5_4b": {"tokens": 10_000, "rows": [{"mode": "per_example", "median_step_s": 10.0},
                                                     {"mode": "packed", "median_step_s": 1.0}]},
    }))  # fmt: skip
    bill = cost.estimate([planned()], "h100", results=tmp_path)
    tokens = 20 * 80 * (cost.load_throughput(tmp_path).prompt_tokens + 512)
    assert bill.rows[0][2] == pytest.approx(tokens / 10_000) and "train_cost.json" in bill.note


def test_unmeasured_classes_are_bandwidth_scaled_and_marked():
    measured_on = cost.gpu_class(MEASURED["meta"]["gpu"]["name"])
    same = cost.estimate([planned()], measured_on)
    assert "measured there" in same.note and "scaled" not in same.note
    other = "a10g" if measured_on != "a10g" else "h200"
    scaled = cost.estimate([planned()], other)
    ratio = cost.BANDWIDTH_GBPS[measured_on] / cost.BANDWIDTH_GBPS[other]
    assert scaled.total_s == pytest.approx(same.total_s * ratio) and "scaled" in scaled.note
    assert cost.gpu_class("NVIDIA A100-SXM4-80GB") == "a100" and cost.gpu_class("NVIDIA A10G") == "a10g"


def test_default_gpu_is_the_one_present_else_h200(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cost.resolve_gpu(None)[0] == "h200" and "no GPU here" in cost.resolve_gpu(None)[1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100 80GB PCIe")
    assert cost.resolve_gpu(None)[0] == "a100"


def test_unknown_gpu_is_one_line(root):
    with pytest.raises(ConfigError, match="gpu: 'v100' is not one of a10g, a100, h100, h200"):
        cost.estimate([planned()], "v100")
    out = subprocess.run([sys.executable, "run.py", "experiment=main_qwen", "plan=true", "gpu=v100"],
                         cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: gpu: 'v100' is not one of a10g, a100, h100, h200"
    ]


def test_plan_prints_each_run_and_the_experiment_total(root):
    out = subprocess.run([sys.executable, "run.py", "experiment=main_qwen", "plan=true", "gpu=a100", "seed=42"],
                         cwd=root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    bill = out.stdout.split("GPU time on A100", 1)[1].splitlines()
    assert "scaled" in bill[0] and len([line for line in bill if " h " in line or " s " in line]) >= 6
    assert bill[-1].startswith("experiment: 6 runs, ") and "of GPU time on one A100" in bill[-1]


def test_without_a_measurement_the_plan_says_so_in_one_line(tmp_path):
    shutil.copy(cost.RESULTS / "eval_throughput.json", tmp_path / "x.json")  # not the name it reads
    with pytest.raises(cost.NoMeasurement, match="no GPU measurement"):
        cost.estimate([planned()], "h100", results=tmp_path)
    assert cost.plan_text([planned()], "h100", results=tmp_path).startswith("GPU time: not estimated, no GPU")
    with pytest.raises(ConfigError, match="gpu: 'v100'"):  # a wrong name stays an error
        cost.plan_text([planned()], "v100", results=tmp_path)
