"""The protocol group (issue 12): every reference value pinned to its source, protocol=harness changing exactly
the listed keys, the values reaching the runs (prompt, targets, budgets, seeds, alpha), the records saying which
protocol made them, and a smoke run of main_qwen under each protocol."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import run
from s0.run import pipeline, records
from s0.run.config import ConfigError, MethodConfig, ModelConfig, ProtocolConfig, TaskConfig
from s0.run.plan import expand, format_plan
from s0.tasks.base import read_data
from s0.tasks.humaneval import PROMPTS
from s0.train import clean_target

AUTHORS = "JackYoung27/s0-tuning@9513f26e "
# (key in the composed config, reference value, source). A value with no source here is not the authors'.
REFERENCE = [
    ("protocol.name", "reference", "conf/protocol/reference.yaml"),
    ("protocol.humaneval_prompt", "reference", AUTHORS + "experiments/humaneval.py format_prompt"),
    ("protocol.math500_prompt", "reference", AUTHORS + "experiments/state_peft/math500.py format_prompt"),
    ("protocol.gsm8k_prompt", "reference", AUTHORS + "experiments/state_peft/gsm8k.py format_prompt"),
    (
        "protocol.spider_prompt",
        "reference",
        AUTHORS + "experiments/state_peft/spider.py format_spider_prompt",
    ),
    (
        "protocol.train_target",
        "clean",
        AUTHORS + "experiments/state_tuning.py gen_and_eval, "
        "experiments/state_peft/common.py strip_generation_artifacts(remove_code_fences=True)",
    ),
    ("protocol.train_eos", False, AUTHORS + "s0_tuning/trainer.py S0Trainer.train (no EOS appended)"),
    ("protocol.humaneval.collect_samples", None, "the common collect.samples below"),
    ("protocol.humaneval.max_new_tokens", None, "the common collect/eval max_new_tokens below"),
    ("collect.samples", 16, AUTHORS + "experiments/state_tuning.py run(n_samples=16)"),
    ("collect.max_new_tokens", 512, AUTHORS + "experiments/state_tuning.py MAX_NEW_TOKENS"),
    ("eval.max_new_tokens", 512, AUTHORS + "experiments/state_tuning.py MAX_NEW_TOKENS"),
    ("eval.max_length", 2048, AUTHORS + "s0_tuning/config.py S0Config.max_length"),
    ("protocol.math500.collect_samples", 4, AUTHORS + "experiments/math500_state_tuning.py run(n_samples=4)"),
    ("protocol.math500.max_new_tokens", 1024, AUTHORS + "experiments/math500_state_tuning.py max_new_tokens"),
    (
        "protocol.math500.seeds",
        [42, 7, 123, 999, 314, 256, 777, 555],
        AUTHORS + "experiments/results/math500_seed_*.json",
    ),
    ("protocol.math500.seed_sweep", "42,7,123,999,314,256,777,555", "protocol.math500.seeds"),
    ("protocol.math500.alpha", 0.07, AUTHORS + "experiments/math500_state_tuning.py run(alpha=0.07)"),
    (
        "protocol.math500.alpha_mode",
        "normalized",
        AUTHORS + "experiments/math500_state_tuning.py run(normalize_alpha=True)",
    ),
    (
        "protocol.gsm8k.collect_samples",
        4,
        AUTHORS + "experiments/gsm8k_state_tuning.py gen_and_eval_math(..., 4)",
    ),
    (
        "protocol.gsm8k.max_new_tokens",
        None,
        "512 = eval.max_new_tokens; gsm8k_state_tuning.py max_new_tokens",
    ),
    (
        "protocol.spider.collect_samples",
        4,
        AUTHORS + "experiments/spider_state_tuning.py gen_and_eval_spider(n=4)",
    ),
    (
        "protocol.spider.max_new_tokens",
        None,
        "512 = eval.max_new_tokens; spider_state_tuning.py max_new_tokens",
    ),
    (
        "protocol.spider.alpha_mode",
        "normalized",
        AUTHORS + "experiments/spider_state_tuning.py run(normalize_alpha=True); "
        "experiments/results/spider_alpha_*.json hyperparams.normalize_alpha",
    ),
]
# What protocol=harness changes, and nothing else (issue 12's table).
HARNESS = {
    "protocol.name": "harness",
    "protocol.humaneval_prompt": "harness",
    "protocol.math500_prompt": "harness",
    "protocol.gsm8k_prompt": "harness",
    "protocol.spider_prompt": "harness",
    "protocol.train_target": "raw",
    "protocol.train_eos": True,
    "protocol.math500.collect_samples": None,
    "protocol.math500.max_new_tokens": None,
    "protocol.math500.seeds": [42, 7, 123, 1337, 999, 314, 256, 777],
    "protocol.math500.seed_sweep": "42,7,123,1337,999,314,256,777",
    "protocol.gsm8k.collect_samples": None,
    "protocol.spider.collect_samples": None,
    "protocol.spider.alpha_mode": "inference",
}
SPIDER_ARMS = ("s0_a0.03", "s0_a0.05", "s0_a0.07", "s0_a0.10", "s0_a0.15")


def plain(compose, *overrides: str) -> dict:
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def planned(compose, *overrides: str):
    cfg, resolved = run.to_run_config(compose(list(overrides)), overrides)
    groups = (run.load_group("method", MethodConfig), run.load_group("model", ModelConfig),
              run.load_group("task", TaskConfig, resolve_with={"paths": resolved["paths"]}))  # fmt: skip
    return cfg, resolved, expand(cfg, *groups)


def test_reference_values_are_pinned_to_their_sources(compose):
    composed = flat(plain(compose))
    for key, value, source in REFERENCE:
        assert source, key
        assert composed[key] == value, f"{key}: {composed[key]!r}, but {source} says {value!r}"
    # the schema's defaults are the reference protocol too (a RunConfig built in code, without Hydra)
    assert flat(dataclasses.asdict(ProtocolConfig())) == {
        k[len("protocol.") :]: v for k, v in composed.items() if k.startswith("protocol.")
    }


@pytest.mark.parametrize("experiment", ["main_qwen", "transfer_math500", "transfer_gsm8k", "spider_boundary"])
def test_harness_changes_exactly_the_listed_keys(compose, experiment):
    ref = flat(plain(compose, f"experiment={experiment}"))
    har = flat(plain(compose, f"experiment={experiment}", "protocol=harness"))
    changed = {k: har[k] for k in ref if ref[k] != har[k]}
    expected = {k: v for k, v in HARNESS.items() if ref[k] != v}
    if experiment == "transfer_math500":  # its seeds come from the protocol
        expected["seeds"] = HARNESS["protocol.math500.seeds"]
    if experiment == "spider_boundary":  # its S0 arms' alpha mode comes from the protocol
        expected.update({f"arms.{arm}.alpha_mode": "inference" for arm in SPIDER_ARMS})
    assert changed == expected
    assert set(ref) == set(har)


def test_transfer_math500_reads_the_protocol(compose):
    for protocol, seeds, samples, tokens in (
        ("reference", [42, 7, 123, 999, 314, 256, 777, 555], 4, 1024),
        ("harness", [42, 7, 123, 1337, 999, 314, 256, 777], 16, 512),
    ):
        _, _, runs = planned(compose, "experiment=transfer_math500", f"protocol={protocol}")
        assert list(dict.fromkeys(r.seed for r in runs)) == seeds
        s0 = [r for r in runs if r.arm == "s0"]
        assert {(r.method.alpha, r.method.alpha_mode) for r in s0} == {(0.07, "normalized")}
        assert {(r.collect.samples, r.collect.max_new_tokens, r.eval.max_new_tokens) for r in s0} == {
            (samples, tokens, tokens)
        }
        assert {r.protocol.name for r in runs} == {protocol}
    hydra_cfg = compose(["experiment=transfer_math500"], hydra=True)
    assert OmegaConf.to_container(hydra_cfg.hydra.sweeper.params, resolve=True) == {
        "seed": "42,7,123,999,314,256,777,555"
    }


def test_spider_boundary_reads_the_protocol(compose):
    """The released Spider runs normalise alpha (spider_alpha_*.json); the harness keeps its raw scaling. The
    five alphas and the seed are the same under both."""
    for protocol, mode in (("reference", "normalized"), ("harness", "inference")):
        _, _, runs = planned(compose, "experiment=spider_boundary", f"protocol={protocol}")
        s0 = {r.arm: r.method for r in runs if r.method.name == "s0"}
        assert {a: (m.alpha, m.alpha_mode) for a, m in s0.items()} == {
            a: (float(a[len("s0_a") :]), mode) for a in SPIDER_ARMS
        }
        assert {r.seed for r in runs} == {42}
        assert {r.collect.samples for r in runs if r.method.name == "s0"} == {
            4 if protocol == "reference" else 16
        }


def test_transfer_gsm8k_alpha_is_the_released_scripts_under_both(compose):
    """experiments/gsm8k_state_tuning.py run(alpha=0.07), scale_state_dict without normalize (its default False,
    experiments/state_peft/training.py): the raw state times alpha, our alpha_mode=inference."""
    for protocol in ("reference", "harness"):
        _, _, runs = planned(compose, "experiment=transfer_gsm8k", f"protocol={protocol}", "arm=s0")
        assert {(r.method.alpha, r.method.alpha_mode) for r in runs} == {(0.07, "inference")}


def test_budgets_follow_each_runs_own_tasks(compose):
    """transfer_code_to_math collects on HumanEval (16 samples, 512 tokens) and evaluates MATH-500 with its
    1024-token budget; transfer_gsm8k collects 4 samples per problem."""
    _, _, runs = planned(compose, "experiment=transfer_code_to_math", "seed=42", "arm=s0")
    by_eval = {r.eval_task.name: r for r in runs}
    assert by_eval["math500"].eval.max_new_tokens == 1024 and by_eval["gsm8k"].eval.max_new_tokens == 512
    assert {(r.collect.samples, r.collect.max_new_tokens) for r in runs} == {(16, 512)}
    assert {r.task.prompt_template for r in runs} == {"reference"}
    _, _, runs = planned(compose, "experiment=transfer_gsm8k", "seed=42", "arm=s0")
    assert runs[0].collect.samples == 4 and runs[0].task.prompt_template == "reference"


def test_protocol_changes_run_ids_and_cache_keys(compose):
    planned_by = {}
    for protocol in ("reference", "harness"):
        cfg, _, runs = planned(compose, "experiment=main_qwen", "seed=42", f"protocol={protocol}")
        planned_by[protocol] = {r.arm: r for r in runs}
    # cache_key reads the pipeline's environment, batch size and (for the engine) a CPU model: the same here
    pipe = SimpleNamespace(cfg=cfg, _environment=dict, model=torch.nn.Linear(1, 1))
    for arm, ref in planned_by["reference"].items():
        har = planned_by["harness"][arm]
        assert ref.run_id != har.run_id, arm
        # the cached collection and frozen-model evaluation differ with the prompt they were made from
        for stage in ("collect", "eval"):
            a, b = (pipeline.Pipeline.cache_key(pipe, stage, r, 2) for r in (ref, har))  # type: ignore[arg-type]
            assert pipeline.config_hash(a) != pipeline.config_hash(b), (arm, stage)


def test_a_common_budget_the_protocol_overrides_is_refused(compose):
    with pytest.raises(ConfigError, match=r"collect.samples=8 does not reach math500 runs.*protocol.math500"):
        planned(compose, "experiment=transfer_math500", "collect.samples=8")
    _, _, runs = planned(
        compose, "experiment=transfer_math500", "protocol.math500.collect_samples=8", "seed=42"
    )
    assert {r.collect.samples for r in runs} == {8}
    _, _, runs = planned(compose, "experiment=main_qwen", "collect.samples=8", "seed=42", "arm=s0")
    assert runs[0].collect.samples == 8  # HumanEval's budget is the common one


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("protocol.name=mine", "protocol.name: 'mine' is not one of reference, harness"),
        ("protocol.humaneval_prompt=chatty", "protocol.humaneval_prompt"),
        ("protocol.gsm8k_prompt=chatty", "protocol.gsm8k_prompt: 'chatty' is not one of"),
        ("protocol.spider.alpha_mode=raw", "protocol.spider.alpha_mode: 'raw' is not one of"),
        ("protocol.train_target=half", "protocol.train_target"),
        ("protocol.math500.collect_samples=0", "protocol.math500.collect_samples: must be > 0"),
        ("protocol.math500.seeds=[1,2]", "protocol.math500.seed_sweep"),
        ("task.prompt_template=x", "task.prompt_template: 'x' is not one of"),
    ],
)
def test_bad_protocol_values_name_the_key(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        run.to_run_config(compose([override]))


def test_plan_shows_the_protocol(compose):
    """`python run.py experiment=X plan=true` prints run.summary and s0.run.plan.format_plan of the runs."""

    def plan(*overrides: str) -> str:
        cfg, _, runs = planned(compose, "experiment=transfer_math500", "seed=42", *overrides)
        return run.summary(cfg, runs) + "\n" + format_plan(runs)

    ref, har = plan(), plan("protocol=harness")
    prompts = "humaneval prompt={0}, math500 prompt={0}, gsm8k prompt={0}, spider prompt={0},"
    assert f"protocol reference: {prompts.format('reference')} train targets=clean, no EOS" in ref
    assert "math500 4 samples x 1024 tokens" in ref and "seeds 42,7,123,999,314,256,777,555" in ref
    assert f"protocol harness: {prompts.format('harness')} train targets=raw + EOS" in har
    assert "spider alpha mode normalized" in ref and "spider alpha mode inference" in har
    assert "1024 new tokens" in ref and "512 new tokens" in har


# ------------------------------------------------------------------- what the model is shown and trained on
@pytest.mark.parametrize(
    ("completion", "target"),
    [
        (
            "```python\n    return a + b\n```",
            "return a + b",
        ),  # the outer strip takes the first indent, as theirs
        ("```python\nx = a\n    return x\n```\n", "x = a\n    return x"),
        ("<think>\nhm\n</think>\n\n    return a + b\n", "return a + b"),
        ("```py\nreturn 1\n```", "```py\nreturn 1"),  # theirs strips only a ```python opening fence
        ("The answer is \\boxed{4}.", "The answer is \\boxed{4}."),
    ],
)
def test_clean_target_is_the_authors_cleaning(completion, target):
    assert clean_target(completion) == target


def smoke(compose, tmp_path, protocol: str, *overrides: str):
    return planned(compose, "experiment=main_qwen", "debug=smoke", "seed=42", f"protocol={protocol}",
                   f"paths.results={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", *overrides)  # fmt: skip


# The authors' user message per task, as each format_prompt writes it (JackYoung27/s0-tuning@9513f26e
# experiments/state_peft/<task>.py); tests/test_tasks_<task>.py pins the whole message.
AUTHORS_OPENING = {
    "math500": "Solve this math problem. Show your work step by step. Put your final answer in \\boxed{}.\n\n",
    "gsm8k": "Solve this math problem step by step. End with the answer after ####.\n\n",
    "spider": "Given the following SQLite database schema for database '",
}


@pytest.mark.parametrize(
    ("experiment", "task"),
    [("transfer_math500", "math500"), ("transfer_gsm8k", "gsm8k"), ("spider_boundary", "spider")],
)
def test_each_tasks_prompt_follows_the_protocol(compose, tmp_path, experiment, task):
    """The planned run's task config carries the protocol's template into the task the pipeline builds (and so
    into run ids and cache keys): the authors' message under reference, ours under harness."""
    import importlib

    from tests.fixtures.spider.build import build_dbs

    extra = [f"task.db_dir={build_dbs(str(tmp_path))}"] if task == "spider" else []
    prompts = importlib.import_module(f"s0.tasks.{task}").PROMPTS
    message = {}
    for protocol in ("reference", "harness"):
        _, _, runs = planned(compose, f"experiment={experiment}", f"protocol={protocol}", "seed=42", *extra)
        assert {(r.task.prompt_template, r.eval_task.prompt_template) for r in runs} == {(protocol, protocol)}
        built = pipeline.task_for(runs[0].eval_task)
        assert built.prompt_template == protocol
        if task == "spider":  # the fixture databases hold concert_singer only
            row = next(
                r for r in json.loads(read_data(None, "spider/dev.json")) if r["db_id"] == "concert_singer"
            )
            ex = built._example("spider/dev/x", row)
        else:
            ex = built.load_split("eval")[0]
        message[protocol] = ex.prompt_messages[0]["content"]
        assert message[protocol] == prompts[protocol].format(
            problem=ex.meta.get("problem"), question=ex.meta.get("question"),
            db_id=ex.meta.get("db_id"), schema=ex.meta.get("schema"),
        )  # fmt: skip
    assert message["reference"].startswith(AUTHORS_OPENING[task])
    assert not message["harness"].startswith(AUTHORS_OPENING[task])
    # task.prompt_template picks one template whatever the protocol
    _, _, runs = planned(
        compose, f"experiment={experiment}", "task.prompt_template=harness", "seed=42", *extra
    )
    assert {r.task.prompt_template for r in runs} == {"harness"}


@pytest.mark.parametrize("protocol", ["reference", "harness"])
def test_prompts_and_training_targets_follow_the_protocol(compose, tmp_path, monkeypatch, protocol):
    import s0.train

    cfg, _, runs = smoke(compose, tmp_path, protocol, "arm=s0")
    task = pipeline.task_for(runs[0].task)
    message = task.load_split("train")[0].prompt_messages[0]["content"]
    assert message.startswith(PROMPTS[protocol].split("{prompt}")[0])
    assert ("No markdown." in message) == (protocol == "reference")

    seen = []
    real = s0.train.train
    monkeypatch.setattr(s0.train, "train", lambda adapter, examples, *a, **kw: seen.extend(examples) or real(
        adapter, examples, *a, **kw))  # fmt: skip
    pipe = pipeline.Pipeline(cfg, progress=False)
    pipe._ensure_model(runs[0])
    completion = "```python\n    return a + b\n```"
    pipe.train(runs[0], [{"id": "HumanEval/0", "prompt": "<p>", "completion": completion}], tmp_path / "run")
    ids = seen[0].completion_ids
    text = pipe.tokenizer.decode(ids)
    eos = pipe.tokenizer.eos_token_id
    if protocol == "reference":  # the authors' target: no fence, no EOS
        assert "```" not in text and text.strip() == "return a + b" and ids[-1] != eos
    else:  # the raw completion, fences included, plus EOS
        assert text.startswith("```python") and ids[-1] == eos


@pytest.mark.slow  # two protocols x (baseline, S0) on the tiny Qwen3.5, end to end: 386 s on the shared CPUs
def test_main_qwen_smoke_run_under_each_protocol(compose, tmp_path):
    for protocol in ("reference", "harness"):
        cfg, _, runs = smoke(compose, tmp_path, protocol)
        runs = [r for r in runs if r.arm in ("baseline", "s0")]
        pipeline.run_all(runs, cfg, progress=False)
        for r in runs:
            run_dir = tmp_path / "runs" / r.run_id
            assert json.loads((run_dir / "run.json").read_text())["protocol"]["name"] == protocol
            assert yaml.safe_load((run_dir / "config.yaml").read_text())["protocol"]["name"] == protocol
            rows = records.read_jsonl(run_dir / "samples.jsonl")
            assert {row["prompt_template"] for row in rows} == {protocol}
    res = records.load_results(tmp_path / "runs")
    assert sorted(set(zip(res.metrics.protocol, res.metrics.arm))) == [
        ("harness", "baseline"), ("harness", "s0"), ("reference", "baseline"), ("reference", "s0")
    ]  # fmt: skip
