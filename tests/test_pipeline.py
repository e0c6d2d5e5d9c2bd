"""The pipeline on bad runtime input: one clear message, and no half-written run directory left behind.
Also: batched greedy evaluation equals one-at-a-time evaluation with S0 (both families) and LoRA active."""

from __future__ import annotations

import json

import pytest
import torch

import run
from s0.adapters import build_adapter
from s0.generation import GenerationSpec, generate
from s0.models import ModelError
from s0.run import pipeline
from s0.run.config import MethodConfig, ModelConfig, TaskConfig
from s0.run.pipeline import PipelineError, run_all
from s0.run.plan import expand
from s0.tasks import TaskDataError
from tests.test_injection import PROMPTS


def planned(compose, tmp_path, *overrides: str):
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


def no_run_dirs(tmp_path) -> bool:
    runs = tmp_path / "runs"
    return not runs.exists() or not any(runs.iterdir())


def test_missing_spider_databases(compose, tmp_path):
    cfg, runs = planned(compose, tmp_path, "experiment=spider_boundary", "arm=baseline")  # bundled dev.json
    with pytest.raises(TaskDataError, match="Spider databases not found"):
        run_all(runs, cfg, progress=False)
    assert no_run_dirs(tmp_path)


def test_model_that_cannot_be_downloaded(compose, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    cfg, runs = planned(compose, tmp_path, "model=qwen3_5_4b", "method=baseline", "smoke=false", "device=cpu")
    with pytest.raises(ModelError, match=r"cannot load 'Qwen/Qwen3\.5-4B'.*weights=random"):
        run_all(runs, cfg, progress=False)
    assert no_run_dirs(tmp_path)


def test_empty_training_set_after_collection(compose, tmp_path):
    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0",
                        "collect.fallback_to_reference=false")  # fmt: skip
    with pytest.raises(PipelineError, match=r"tried 4 problems x 2 samples .* none passed"):
        run_all(runs, cfg, progress=False)
    assert no_run_dirs(tmp_path)


def test_out_of_memory_names_the_knobs(compose, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(pipeline, "generate", oom)
    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=baseline")
    with pytest.raises(PipelineError, match=r"out of GPU memory.*eval\.batch_size"):
        run_all(runs, cfg, progress=False)
    assert no_run_dirs(tmp_path)


@pytest.mark.parametrize(("family", "method", "scale"), [("qwen3_5", "s0", 1.0), ("falcon_h1", "s0", 10.0),
                                                         ("qwen3_5", "lora", 0.3), ("falcon_h1", "lora", 0.3)])  # fmt: skip
@pytest.mark.usefixtures("one_thread")
def test_batched_greedy_equals_one_at_a_time(family, method, scale):
    """The evaluation engine (length-sorted, left-padded batches) with an adapter active gives the same tokens
    as one prompt at a time."""
    from s0.models import TINY_ARCH, build_model, tiny_tokenizer

    tok = tiny_tokenizer()
    # initializer_range 0.3: with the default 0.02 a tiny tied-embedding model just repeats its last token
    model = build_model(family, {**TINY_ARCH[family], "initializer_range": 0.3}, dtype=torch.float64)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj" if family == "qwen3_5" else "in_proj"]
    adapter = build_adapter(method, model, alpha=0.5, target_modules=targets, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a nonzero adapter, as if trained, so the check is not vacuous
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    spec = GenerationSpec(max_new_tokens=6, batch_size=8)
    with adapter.inactive():
        base = generate(adapter.model, tok, PROMPTS, spec, progress=False)
    with adapter.active():
        batched = generate(adapter.model, tok, PROMPTS, spec, progress=False)
        single = [generate(adapter.model, tok, [p], spec, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert batched != base, "the adapter changed nothing: the check would be vacuous"


def test_cache_keys_hold_everything_that_changes_a_cached_generation(compose, tmp_path):
    """Collection and the frozen model's evaluation are cached across runs: a key that missed one input (the
    batch composition, the truncation length, the kernel, the library version or the dtype) would hand one
    run another's samples."""

    def keys(*overrides: str) -> tuple[str, str]:
        cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0", *overrides)
        pipe = pipeline.Pipeline(cfg, progress=False)
        pipe._ensure_model(runs[0])
        return tuple(pipeline.config_hash(pipe.cache_key(s, runs[0], 1)) for s in ("collect", "eval"))

    base = keys()
    assert keys() == base
    for override in ("eval.max_length=1024", "backend.gdn=torch"):
        collect, evaluate = keys(override)
        assert collect != base[0] and evaluate != base[1], override
    # each stage keys on the batch size it decodes with (on CPU the engine is hf, where the batch matters)
    eval_batch, collect_batch = keys("eval.batch_size=2"), keys("collect.batch_size=2")
    assert eval_batch[0] == base[0] and eval_batch[1] != base[1]
    assert collect_batch[0] != base[0] and collect_batch[1] == base[1]

    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0")
    pipe = pipeline.Pipeline(cfg, progress=False)
    pipe._ensure_model(runs[0])
    before = pipe.cache_key("collect", runs[0], 1)
    pipe.model.to(torch.float64)
    assert pipe.cache_key("collect", runs[0], 1)["env"]["dtype"] != before["env"]["dtype"]
    assert before["env"]["packages"]["transformers"]


def test_run_directory_config_is_the_config_the_run_used(compose, tmp_path):
    """A smoke run of main_qwen runs the tiny model with capped tokens: its config.yaml says so, not the
    command-level qwen3_5_4b with 512 tokens."""
    import yaml

    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=baseline")
    run_all(runs, cfg, progress=False)
    run_dir = tmp_path / "runs" / runs[0].run_id
    used = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert used["model"]["name"] == "tiny_qwen3_5" and used["model"]["weights"] == "random"
    assert used["eval"]["max_new_tokens"] == 16 and used["eval_task"]["n_eval"] == 4
    assert (used["seed"], used["arm"], used["method"]["name"]) == (42, "baseline", "baseline")
    assert json.loads((run_dir / "run.json").read_text())["smoke"] is True
    prov = (run_dir / "provenance.json").read_text()
    assert '"generation"' in prov and '"model_load"' in prov


def test_lora_merge_is_applied_at_evaluation(compose, tmp_path, monkeypatch):
    """`merge: true` used to be accepted and ignored; now evaluation runs on the merged weights, which are
    restored bit-exactly afterwards (the run would otherwise be refused by the weights checksum)."""
    from s0.adapters.peft_methods import LoraAdapter

    merged = []
    real = LoraAdapter.merge
    monkeypatch.setattr(LoraAdapter, "merge", lambda self: merged.append(1) or real(self))
    arm = "lora_r24_lr5e-4"
    cfg, runs = planned(
        compose, tmp_path, "experiment=main_qwen", "seed=42", f"arm={arm}", f"+arms.{arm}.merge=true"
    )
    run_all(runs, cfg, progress=False)
    assert merged == [1]
    metrics = json.loads((tmp_path / "runs" / runs[0].run_id / "metrics.json").read_text())
    # r=24 on q (64->64), k and v (64->16), o (32->64) of the tiny model's 2 attention layers: r x (in + out)
    assert metrics["trainable_params"] == 2 * 24 * ((64 + 64) + 2 * (64 + 16) + (32 + 64))
    assert (tmp_path / "runs" / runs[0].run_id / "done").exists()


class _Collected(Exception):
    """Stops `collect` once it has decoded: the test compares samples, not the sandbox's verdicts."""


def _collected_samples(compose, tmp_path, *overrides: str) -> tuple[GenerationSpec, list[list[str]], dict]:
    cfg, runs = planned(compose, tmp_path, "experiment=main_qwen", "seed=42", "arm=s0", *overrides)
    pipe = pipeline.Pipeline(cfg, progress=False)
    pipe._ensure_model(runs[0])
    seen = {}

    def spy(model, tokenizer, prompts, spec, progress=True, desc="generate"):
        seen["spec"], seen["texts"] = spec, generate(model, tokenizer, prompts, spec, progress, desc=desc)
        raise _Collected

    pipe_generate, pipeline.generate = pipeline.generate, spy
    try:
        with pytest.raises(_Collected):
            pipe.collect(runs[0], pipeline.task_for(runs[0].task))
    finally:
        pipeline.generate = pipe_generate
    return seen["spec"], seen["texts"], pipe.cache_key("collect", runs[0], 1)


@pytest.mark.usefixtures("one_thread")
def test_collection_decodes_at_collect_batch_size_and_static_samples_ignore_it(compose, tmp_path):
    """Collection (80 x 16 rows in the paper's setup) decodes at collect.batch_size, not eval.batch_size. With the
    static engine each row draws from its own seed, so batch 4 and batch 16 give the same samples and share one
    collection cache entry; with engine=hf the batch changes the draws, so there the cache keys on it."""
    small = _collected_samples(
        compose, tmp_path, "eval.engine=static", "collect.batch_size=4", "eval.batch_size=3"
    )
    large = _collected_samples(compose, tmp_path, "eval.engine=static", "collect.batch_size=16")
    assert (small[0].batch_size, large[0].batch_size) == (4, 16)  # collect.batch_size reaches the decoder
    rows = sum(map(len, small[1]))
    assert rows > small[0].batch_size, "one batch at either size: the comparison would be vacuous"
    assert small[1] == large[1], "the static engine's samples depend on the batch size"
    assert len({t for row in small[1] for t in row}) > 1, "every sample is the same text: vacuous"
    assert pipeline.config_hash(small[2]) == pipeline.config_hash(large[2])
    hf4 = _collected_samples(compose, tmp_path, "eval.engine=hf", "collect.batch_size=4")
    hf16 = _collected_samples(compose, tmp_path, "eval.engine=hf", "collect.batch_size=16")
    assert pipeline.config_hash(hf4[2]) != pipeline.config_hash(hf16[2])
