"""Every experiment file composes, validates and expands to the run count the paper's protocol implies."""

from __future__ import annotations

import functools
import json

import pytest
from omegaconf import OmegaConf

import run
from s0.config import ConfigError, MethodConfig, ModelConfig, TaskConfig
from s0.plan import expand

EXPERIMENTS = sorted(p.stem for p in run.CONF.glob("experiment/*.yaml"))

# arms x seeds x eval tasks, from the paper's setup (issue 2's table); a changed file must change this too.
EXPECTED_RUNS = {
    "main_qwen": 6 * 10,  # baseline, S0, 4 LoRA grid points (Sec 4.3) x 10 seeds
    "main_falcon": 3 * 3,
    "lora_rank_matched": 3 * 10,
    "state_offset": 3 * 10,
    "scaling": 2 * (10 + 3 + 3),  # 0.8B x 10 seeds, 2B and 9B x 3
    "alpha_sweep_qwen": 1 + 5,
    "alpha_sweep_falcon": 1 + 9,
    "layer_ablation": 5,
    "data_efficiency": 4 * 3,
    "passk": 3 * 3,
    "prefix_control": 4 * 3,
    "transfer_math500": 2 * 8,
    "transfer_gsm8k": 2 * 10,
    "transfer_code_to_math": 2 * 10 * 2,  # evaluated on MATH-500 and GSM8K
    "spider_boundary": 1 + 5,
    "mechanism": 2,
}


@functools.cache
def groups(paths: str) -> tuple[dict, dict, dict]:
    methods = run.load_group("method", MethodConfig)
    models = run.load_group("model", ModelConfig)
    tasks = run.load_group("task", TaskConfig, resolve_with={"paths": json.loads(paths)})
    return methods, models, tasks


def plan(compose, overrides: list[str]):
    run_cfg, plain = run.to_run_config(compose(overrides))
    return run_cfg, expand(run_cfg, *groups(json.dumps(plain["paths"])))


def test_every_paper_experiment_has_a_file():
    assert sorted(EXPECTED_RUNS) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_plan_count(compose, name):
    run_cfg, runs = plan(compose, [f"experiment={name}"])
    assert run_cfg.experiment == name
    assert run_cfg.paper_ref, "every experiment cites the paper"
    assert len(runs) == EXPECTED_RUNS[name]
    assert len({r.run_id for r in runs}) == len(runs), "two runs of one experiment share a result directory"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_multirun_sweep_composes(compose, name):
    """Each job of the file's own sweep composes and plans exactly its share of the runs."""
    hydra_cfg = compose([f"experiment={name}"], hydra=True)
    params = hydra_cfg.hydra.sweeper.params
    params = OmegaConf.to_container(params) if params is not None else {}
    run_cfg, all_runs = plan(compose, [f"experiment={name}"])
    if not params:  # single-job experiments run every seed in one process
        return
    assert set(params) == {"seed"}
    seeds = [int(s) for s in str(params["seed"]).split(",")]
    assert seeds == run_cfg.seeds
    total = 0
    for seed in seeds:
        _, runs = plan(compose, [f"experiment={name}", f"seed={seed}"])
        assert {r.seed for r in runs} == {seed}
        total += len(runs)
    assert total == len(all_runs)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_mode_uses_tiny_models(compose, name):
    _, runs = plan(compose, [f"experiment={name}", "debug=smoke"])
    assert runs and all(r.model.name.startswith("tiny_") for r in runs)
    assert all(r.method.steps <= 2 and r.eval.max_new_tokens <= 16 for r in runs)


def test_main_qwen_reads_like_the_paper(compose):
    _, runs = plan(compose, ["experiment=main_qwen", "seed=42"])
    by_arm = {r.arm: r for r in runs}
    s0 = by_arm["s0"].method
    assert (s0.alpha, s0.lr, s0.steps, s0.l2, s0.grad_clip) == (0.07, 1e-3, 20, 5e-4, 1.0)
    lora = by_arm["lora_r24_lr5e-4"].method
    assert (lora.r, lora.lr, lora.steps, lora.lora_alpha) == (24, 5e-4, 50, None)
    assert by_arm["baseline"].eval.max_new_tokens == 512 and by_arm["baseline"].eval.mode == "greedy"
    assert by_arm["s0"].model.hub_id == "Qwen/Qwen3.5-4B"


def test_shared_runs_share_ids(compose):
    """main_qwen's S0 seed 42 and state_offset's S0 seed 42 are one run (same config hash)."""
    _, a = plan(compose, ["experiment=main_qwen", "seed=42", "arm=s0"])
    _, b = plan(compose, ["experiment=state_offset", "seed=42", "arm=s0"])
    assert a[0].run_id == b[0].run_id


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=main_qwen", "arms.s0.alpha=-0.5"], "arms.s0.alpha: must be > 0"),
        (["model=qwen2_5_3b_instruct", "method=s0"], "use method=prefix"),
        (["model=qwen2_5_3b_instruct", "method=state_offset"], "use method=prefix"),
        (["experiment=layer_ablation", "arms.s0_late.layers=[16,40]"], "index 40 out of range"),
        (["experiment=main_qwen", "seeds=[a,b]"], "seeds[0]"),
        (["experiment=main_qwen", "arm=nope"], "arm: 'nope' is not an arm"),
        (["eval.mode=beam"], "eval.mode"),
    ],
)
def test_bad_values_name_the_key(compose, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        plan(compose, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
