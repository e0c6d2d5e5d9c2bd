"""Every experiment file composes, validates and expands to the run count the paper's protocol implies."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
from omegaconf import OmegaConf

import run
from s0.models import FAMILIES
from s0.run.config import METHOD_KEYS, ConfigError, MethodConfig, ModelConfig, TaskConfig
from s0.run.plan import expand

EXPERIMENTS = sorted(p.stem for p in run.CONF.glob("experiment/*.yaml"))

# arms x seeds x eval tasks, from the paper's setup (issue 2's table); a changed file must change this too.
EXPECTED_RUNS = {
    "main_qwen": 6 * 10,  # baseline, S0, 4 LoRA grid points (Sec 4.3) x 10 seeds
    "main_falcon": 3 * 3,
    "lora_rank_matched": 3 * 10,
    "state_offset": 5 * 10,  # baseline, S0, state-offset at alpha 0.07 / 0.3 / 1.0
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
    "expressiveness": 3 * 3 * 6,  # baseline, S0, rank-matched LoRA x 3 seeds x 6 models
}


@functools.cache
def groups(paths: str) -> tuple[dict, dict, dict]:
    methods = run.load_group("method", MethodConfig)
    models = run.load_group("model", ModelConfig)
    tasks = run.load_group("task", TaskConfig, resolve_with={"paths": json.loads(paths)})
    return methods, models, tasks


def plan(compose, overrides: list[str]):
    run_cfg, plain = run.to_run_config(compose(overrides), overrides)
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
    # resolved: transfer_math500's seed sweep is ${protocol.math500.seed_sweep}
    params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
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


def test_random_weight_run_ids_name_their_tokenizer(compose):
    """A random-weight run tokenized by the proxy and one by the tiny tokenizer see other prompts: their ids (and so
    their caches) differ. Hub runs always use the hub's tokenizer: their ids do not depend on model.tokenizer."""

    def run_id(*overrides: str) -> str:
        return plan(compose, ["experiment=main_qwen", "seed=42", "arm=s0", *overrides])[1][0].run_id

    random = ["model.weights=random"]
    assert run_id(*random, "model.tokenizer=proxy") != run_id(*random, "model.tokenizer=tiny")
    assert run_id(*random) == run_id(*random, "model.tokenizer=proxy")  # auto picks the proxy for Qwen3.5-4B
    assert run_id() == run_id("model.tokenizer=hub")


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
        (["experiment=layer_ablation", "method.layers=[0,99]"], "index 99 out of range"),
        (["experiment=layer_ablation", "method.layers=[0,99]", "debug=smoke"], "index 99 out of range"),
        (["experiment=main_qwen", "method.lr=0.5"], "are the same run"),  # collapses the lr grid
        (["experiment=alpha_sweep_qwen", "method.r=8"], "method.r: no arm of experiment 'alpha_sweep_qwen'"),
        (["experiment=main_qwen", "method=lora"], "arm=<arm> or change one with arms.<arm>.method"),
        (["experiment=main_qwen", "method.name=lora"], "method.name: choose a method with method=<name>"),
        (["method=lora", "method.alpha=0.5"], "method.alpha: method 'lora' does not use alpha"),
        (["method=baseline", "method.steps=5"], "method.steps: method 'baseline' does not use steps"),
        (["experiment=main_qwen", "+arms.s0.merge=true"], "arms.s0.merge: only LoRA folds into the weights"),
        (
            ["model=tiny_qwen2", "method=s0"],
            "needs recurrent layers, but model 'tiny_qwen2' is a pure Transformer",
        ),
        (
            ["model=tiny_qwen3_5", "method=prefix"],
            "prefix tuning needs a pure Transformer, but model 'tiny_qwen3_5'",
        ),
    ],
)
def test_bad_values_name_the_key(compose, overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        plan(compose, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_registered_family_is_accepted(compose, family):
    """model.family is checked against the registry (s0/models/registry.py): a new family needs no config line."""
    overrides = [f"model.family={family}"]
    assert run.to_run_config(compose(overrides), overrides)[0].model.family == family


def test_unknown_family_is_refused_naming_the_known_ones(compose):
    overrides = ["model.family=nope"]
    with pytest.raises(ConfigError) as err:
        run.to_run_config(compose(overrides), overrides)
    message = str(err.value)
    assert message.startswith("model.family: 'nope' is not one of") and "\n" not in message
    assert all(name in message for name in FAMILIES)


def by_arm(compose, *overrides: str) -> dict:
    return {r.arm: r for r in plan(compose, list(overrides))[1]}


def test_method_override_reaches_every_arm_that_reads_it(compose):
    """`method.l2` goes to every state arm over the file's value; the baseline keeps its run."""
    before = by_arm(compose, "experiment=state_offset", "seed=42")
    after = by_arm(compose, "experiment=state_offset", "seed=42", "method.l2=0")
    trained = [a for a in after if a != "baseline"]
    assert trained == ["s0", "state_offset_a0.07", "state_offset_a0.3", "state_offset_a1.0"]
    for arm in trained:
        assert after[arm].method.l2 == 0.0
        assert after[arm].run_id != before[arm].run_id
    assert after["baseline"].run_id == before["baseline"].run_id


def test_method_alpha_over_the_alpha_sweep_is_refused(compose):
    """One alpha for every arm would make the sweep's three state-offset arms one run: refused, not merged."""
    with pytest.raises(ConfigError, match="same run"):
        by_arm(compose, "experiment=state_offset", "seed=42", "method.alpha=0.1")


def test_method_override_of_a_training_key_skips_the_baseline(compose):
    before = by_arm(compose, "experiment=main_qwen", "seed=42")
    after = by_arm(compose, "experiment=main_qwen", "seed=42", "method.steps=7")
    assert after["baseline"].method.steps == 0 and after["baseline"].run_id == before["baseline"].run_id
    assert {a: r.method.steps for a, r in after.items() if a != "baseline"} == dict.fromkeys(
        list(after)[1:], 7
    )
    lora = after["lora_r16_lr1e-4"].method
    assert (lora.r, lora.lr) == (16, 1e-4), "the arm's own grid values stay"


def test_method_override_with_one_arm(compose):
    """An lr for every trained arm would merge main_qwen's lr grid; with arm= it is one run and applies."""
    runs = by_arm(compose, "experiment=main_qwen", "seed=42", "arm=lora_r24_lr5e-4", "method.lr=0.5")
    assert runs["lora_r24_lr5e-4"].method.lr == 0.5


def test_command_line_arm_value_beats_method_value(compose):
    runs = by_arm(
        compose, "experiment=main_qwen", "seed=42", "arm=s0", "method.alpha=0.1", "arms.s0.alpha=0.2"
    )
    assert runs["s0"].method.alpha == 0.2


def test_method_choice_that_matches_every_trained_arm_is_accepted(compose):
    runs = by_arm(
        compose, "experiment=prefix_control", "seed=42", "method=prefix", "method.num_virtual_tokens=5"
    )
    assert {a: r.method.num_virtual_tokens for a, r in runs.items() if a != "baseline"} == {
        "prefix_lr1e-4": 5, "prefix_lr1e-3": 5, "prefix_lr1e-2": 5}  # fmt: skip


def test_override_lands_in_the_recorded_config(compose):
    """config.yaml of a run is written from `plain`: its arms must carry the applied value."""
    overrides = ["experiment=main_qwen", "method.alpha=0.3"]
    _, plain = run.to_run_config(compose(overrides), overrides)
    assert plain["arms"]["s0"]["alpha"] == 0.3


def test_method_keys_cover_what_each_method_reads():
    """METHOD_KEYS decides where an override goes; it must name every adapter field and every method field."""
    from s0.adapters import ADAPTERS

    every = set().union(*METHOD_KEYS.values()) | {"name"}
    assert every == {f.name for f in dataclasses.fields(MethodConfig)}
    for method, cls in ADAPTERS.items():
        adapter_fields = (
            {f.name for f in dataclasses.fields(cls.config_cls)} if hasattr(cls, "config_cls") else set()
        )
        assert adapter_fields - {"target_modules"} <= set(METHOD_KEYS[method]), method


@pytest.mark.parametrize(
    ("overrides", "results", "cache"),
    [
        (["debug=smoke"], "./results/smoke/runs", "./results/smoke/cache"),
        ([], "./results/runs", "./results/cache"),
        (["debug=smoke", "paths.results=/r", "paths.cache=/c"], "/r", "/c"),  # the command line wins
        (["debug=smoke", "paths.root=/x"], "/x/results/smoke/runs", "/x/results/smoke/cache"),
    ],
)
def test_smoke_runs_have_their_own_folder(compose, overrides, results, cache):
    """Tiny-model runs in results/runs would be averaged with real ones; smoke mode keeps them apart."""
    run_cfg, _ = plan(compose, ["experiment=main_qwen", "seed=42", *overrides])
    assert (run_cfg.paths.results, run_cfg.paths.cache) == (results, cache)


def test_method_override_beats_the_per_model_values_of_an_arm(compose):
    """expressiveness sets LoRA's rank per model (`per_model`); `method.r=7` must reach every model's LoRA run
    instead of being silently replaced by the file's per-model rank."""
    _, before = plan(compose, ["experiment=expressiveness", "seed=42", "arm=lora"])
    assert len({r.method.r for r in before}) > 1
    _, runs = plan(compose, ["experiment=expressiveness", "seed=42", "arm=lora", "method.r=7"])
    assert len(runs) == len(before) and {r.method.r for r in runs} == {7}
