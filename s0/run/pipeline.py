"""The pipeline of one run: collect -> train -> evaluate -> record, each stage cached when its inputs repeat.

    run_all(runs, cfg)   # runs from s0.run.plan.expand; cfg is the RunConfig they came from

- collect: sample `collect.samples` completions per training problem from the frozen base model, verify them
  in the sandbox, keep at most `collect.max_per_problem` passing ones per problem in problem order. Cached
  by (model, task, collection config, seed) under paths.cache, shared by every method of a seed.
- train: one loop for every method (s0.train), the adapter saved in the run directory.
- evaluate: greedy or sampled decoding with the adapter active on the eval split; per-problem records.
  The frozen model's evaluation is cached by (model, eval task, decoding[, seed if sampled]) and reused.
- selection.split=heldout (issue 12): the last selection.heldout training problems stay out of collection, and
  the selection arms are also evaluated on them (metrics.json "selection", samples_selection.jsonl).
- record: s0.run.records' layout, `done` last. A run with `done` is skipped on rerun; one without is redone,
  reusing its saved adapter if training had finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from s0.adapters.injection import kernel_notes
from s0.adapters.kinds import recurrent_layers
from s0.generation import GenerationSpec, GenerationStats, generate, resolve_engine
from s0.passk import pass_at_k_from_records
from s0.run import records
from s0.run.config import STATE_METHODS, RunConfig
from s0.run.loading import PipelineError, load_model, resolve_device, task_for
from s0.run.plan import PlannedRun, config_hash
from s0.run.preflight import PreflightError, check_generation, check_logit_change, check_prompts
from s0.run.provenance import package_versions, provenance
from s0.seeding import seed_everything

log = logging.getLogger("s0")


@contextmanager
def run_log(run_dir: Path) -> Iterator[None]:
    """Everything the `s0` logger says during a run also goes to run_dir/run.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class _OncePerPackage(logging.Filter):
    """transformers says "`f` is falling back to its reference PyTorch implementation because `pkg` is not
    installed" once per kernel function; one line per missing package is enough (s0.backends says the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "falling back to its reference PyTorch implementation" not in message:
            return True
        package = message.split("because", 1)[-1].split("is not installed", 1)[0].strip()
        if package in self.seen:
            return False
        self.seen.add(package)
        return True


def quiet_library_notices() -> None:
    """Each library notice once: kernel fallbacks once per missing package, and no FutureWarning about
    transformers' deprecated `is_gradient_checkpointing` alias, which peft reads on every LoRA run."""
    from transformers.utils import logging as hf_logging

    # transformers propagates its records to the root logger when CI is set, on top of its own stderr handler:
    # under Hydra's root handler every notice would then print twice
    hf_logging.disable_propagation()
    kernels = logging.getLogger("transformers.integrations.hub_kernels")
    if not any(isinstance(f, _OncePerPackage) for f in kernels.filters):
        kernels.addFilter(_OncePerPackage())
    warnings.filterwarnings(
        "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
    )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _oom_message(stage: str) -> str:
    return (
        f"out of GPU memory during {stage}. Lower eval.batch_size, collect.batch_size, collect.samples or "
        "eval.max_new_tokens, use method.batching=per_example for training, or pick a smaller model."
    )


class Pipeline:
    """Runs planned runs on one device, loading each model once for all the runs that use it."""

    def __init__(self, cfg: RunConfig, resolved: dict | None = None, progress: bool = True):
        self.cfg = cfg
        self.resolved = resolved or {}
        # bars only on a terminal: in a log file they are \r clutter; the stages log one line each instead
        self.progress = progress and sys.stderr.isatty()
        quiet_library_notices()
        self.device = resolve_device(cfg.device)
        self.results = Path(cfg.paths.results)
        self.cache = Path(cfg.paths.cache)
        self._model_key: str | None = None
        self.model = self.tokenizer = None
        self.backends: dict[str, Any] | None = None
        self.load_report: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------- plumbing
    def _ensure_model(self, run: PlannedRun) -> None:
        key = config_hash(run.key()["model"])
        if key != self._model_key:
            from s0.backends import select_backends

            self.model = self.tokenizer = None
            self.model, self.tokenizer = load_model(run, self.device)
            self.load_report = getattr(self.model, "s0_load_report", None)
            self._model_key = key
            # Routes kernels (fla or PyTorch, per direction) through the injection dispatchers; without this a
            # backward through fla on Hopper with triton < 3.7.1 raises (s0/backends.py).
            self.backends = select_backends(self.cfg.backend.gdn, self.cfg.backend.mamba, device=self.device)

    def _environment(self) -> dict[str, Any]:
        """What changes cached generations besides the run's config: numerics of the kernels and libraries."""
        versions = package_versions(("torch", "transformers", "peft", "flash-linear-attention", "mamba-ssm"))
        return {
            "dtype": str(next(self.model.parameters()).dtype),
            "device": self.device.type,
            "backends": self.backends,
            "packages": versions,
        }

    def cache_key(self, stage: str, run: PlannedRun, task_version: int) -> dict[str, Any]:
        """Everything that changes a cached stage's content: a rerun with any of it changed misses the cache.

        collect: the frozen model's verified samples (shared by every method of a seed); eval: the frozen model's
        evaluation (shared by every baseline arm). Both cut prompts to eval.max_length, so that counts even for
        collection. Collection decodes in batches of collect.batch_size: with engine=hf that changes the samples
        (`generate` draws every row of a batch from one torch.multinomial stream, so a row's tokens depend on its
        batch), with the static engine it does not (each row draws from its own seed, s0.decode.row_seed; the
        batch moves only the float noise of the forward, as any kernel schedule does), so only hf keys on it.
        """
        engine = resolve_engine(self.model, self.cfg.eval.engine)
        key: dict[str, Any] = {
            "model": run.key()["model"],
            "task_version": task_version,
            "env": self._environment(),
            # the engine that decodes (auto resolved): static and hf draw different samples for one seed
            "engine": engine,
        }
        if stage == "collect":
            collect = dataclasses.asdict(run.collect)
            # per-row seeds: the batch size does not change a row's samples (test_pipeline)
            if engine == "static":
                del collect["batch_size"]
            key.update(task=dataclasses.asdict(run.task), collect=collect, seed=run.seed,
                       max_length=self.cfg.eval.max_length)  # fmt: skip
            if run.selection.heldout:  # collected without the held-out slice: never the split=eval cache
                key["heldout"] = run.selection.heldout
        else:
            sampled = run.eval.mode == "sampled"
            key.update(eval_task=dataclasses.asdict(run.eval_task), eval=dataclasses.asdict(run.eval),
                       seed=run.seed if sampled else None)  # fmt: skip
        return key

    def _spec(self, sampling, seed: int, sampled: bool, samples: int, max_new_tokens: int) -> GenerationSpec:
        """Decoding settings; `sampling` is the EvalConfig or CollectConfig whose temperature, top-p and batch
        size apply (collection's 1,280 rows run at collect.batch_size, evaluation at eval.batch_size)."""
        return GenerationSpec(
            max_new_tokens=max_new_tokens,
            do_sample=sampled,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            samples=samples,
            batch_size=sampling.batch_size,
            max_length=self.cfg.eval.max_length,
            seed=seed,
            engine=self.cfg.eval.engine,  # collection, evaluation and pass@k sampling share the run's engine
        )

    # ------------------------------------------------------------------------------------------ stages
    def collect(self, run: PlannedRun, task) -> tuple[list[dict], dict]:
        """Verified (prompt, completion) pairs for training, cached across methods of one seed."""
        key = self.cache_key("collect", run, task.VERSION)
        path = self.cache / "collect" / f"{config_hash(key)}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            log.info("collect: %d verified solutions from cache %s", len(cached["pairs"]), path.name)
            return cached["pairs"], cached["info"]
        examples = task.load_split("train")
        if run.selection.heldout:  # selection.split=heldout: the selection slice never reaches training
            held = {ex.id for ex in heldout_slice(task, run.selection.heldout)}
            examples = [ex for ex in examples if ex.id not in held]
        prompts = [task.build_prompt(ex, self.tokenizer) for ex in examples]
        check_prompts(prompts, self.tokenizer)
        c = run.collect
        spec = self._spec(c, run.seed, sampled=True, samples=c.samples, max_new_tokens=c.max_new_tokens)
        texts = generate(self.model, self.tokenizer, prompts, spec, self.progress, desc="collect")
        flat_ex = [ex for ex in examples for _ in range(c.samples)]
        scored = task.score(flat_ex, [t for row in texts for t in row], progress=self.progress)
        pairs: list[dict] = []
        for i, ex in enumerate(examples):
            passing = [texts[i][s] for s in range(c.samples) if scored[i * c.samples + s]["correct"]]
            pairs += [
                {"id": ex.id, "prompt": prompts[i], "completion": t} for t in passing[: c.max_per_problem]
            ]
        info = {"problems": len(examples), "samples": c.samples, "source": "model", "passed": len(pairs),
                "heldout": run.selection.heldout}  # fmt: skip
        if not pairs and c.fallback_to_reference:
            pairs, info = self._reference_pairs(task, examples, prompts, info)
        if not pairs:
            raise PipelineError(
                f"empty training set after collection: tried {len(examples)} problems x {c.samples} samples from "
                f"the frozen {run.model.name}, and none passed. Raise collect.samples or collect.max_new_tokens, "
                "or check the task's prompt and extraction."
            )
        info["data_hash"] = config_hash([[p["id"], p["completion"]] for p in pairs], 16)
        records.write_json(path, {"pairs": pairs, "info": info, "key": key})
        log.info(
            "collect: %d verified solutions from %d problems (%s)", len(pairs), len(examples), info["source"]
        )
        return pairs, info

    def _reference_pairs(self, task, examples, prompts, info) -> tuple[list[dict], dict]:
        """The tiny-model demo's fallback: the task's own reference solutions, verified in the sandbox too."""
        refs = [task.reference_completion(ex) or "" for ex in examples]
        scored = task.score(examples, refs, progress=self.progress)
        pairs = [{"id": ex.id, "prompt": p, "completion": r}
                 for ex, p, r, s in zip(examples, prompts, refs, scored) if s["correct"]]  # fmt: skip
        log.warning(
            "collect: the model solved none of %d problems; training on %d execution-verified REFERENCE solutions "
            "instead (collect.fallback_to_reference=true, meant for the tiny-model demo only)",
            len(examples), len(pairs),
        )  # fmt: skip
        return pairs, {**info, "source": "reference", "passed": 0, "reference_verified": len(pairs)}

    def train(self, run: PlannedRun, pairs: list[dict], run_dir: Path):
        """The adapter for `run`, trained (or reloaded if an interrupted run had finished training)."""
        from s0.adapters import build_adapter, load_adapter
        from s0.train import encode_pair, train

        m = run.method
        adapter_dir, train_log = run_dir / "adapter", run_dir / "train.json"
        if adapter_dir.exists() and train_log.exists():
            log.info("train: reusing the adapter saved by an interrupted attempt")
            return load_adapter(adapter_dir, self.model)
        if m.max_train_examples is not None and m.max_train_examples < len(pairs):
            # assumption (App D): a seeded random subset, so seeds differ in which solutions they see
            pairs = random.Random(run.seed).sample(pairs, m.max_train_examples)
        # the protocol's targets: reference = the cleaned completion without EOS (the authors' practice),
        # harness = the raw completion plus EOS (conf/protocol/)
        proto = run.protocol
        examples = [encode_pair(self.tokenizer, p["prompt"], p["completion"], self.cfg.eval.max_length,
                                add_eos=proto.train_eos, clean=proto.train_target == "clean")
                    for p in pairs]  # fmt: skip
        fields = {
            k: v
            for k, v in dataclasses.asdict(m).items()
            if k not in ("name", "micro_batch_size", "max_tokens")
        }
        if m.name == "lora":
            fields["target_modules"] = list(run.model.lora_targets)
        adapter = build_adapter(m.name, self.model, seed=run.seed, **fields)
        result = train(adapter, examples, m.steps, m.lr, m.l2, m.grad_clip, m.batching, run.seed, self.progress,
                       log_fn=lambda row: log.debug("train %s", row), micro_batch_size=m.micro_batch_size,
                       max_tokens=m.max_tokens, pad_token_id=self.tokenizer.pad_token_id)  # fmt: skip
        log.info("train: %d examples, %d steps, loss %.4f -> %.4f, %.1fs", len(examples), m.steps,
                 result.losses[0], result.losses[-1], result.seconds)  # fmt: skip
        data_hash = config_hash([[p["id"], p["completion"]] for p in pairs], 16)
        tmp = run_dir / "adapter.partial"
        adapter.save(
            tmp, extra_meta={"train": dataclasses.asdict(m), "data_hash": data_hash, "run_id": run.run_id}
        )
        tmp.replace(adapter_dir)
        records.write_json(train_log, {**result.to_dict(), "data_hash": data_hash, "n_pairs": len(pairs)})
        return adapter

    def evaluate(self, run: PlannedRun, task, adapter, checks: dict[str, Any]) -> list[dict]:
        """Per-sample records on the eval split, with the adapter active (cached for the frozen model).

        Before anything is generated, the preflight checks (s0/run/preflight.py) run on the first prompts; their
        findings go into `checks`, and a failure stops the run.
        """
        e = run.eval
        sampled = e.mode == "sampled"
        examples = task.load_split("eval")
        prompts = [task.build_prompt(ex, self.tokenizer) for ex in examples]
        samples = e.samples if sampled else 1
        spec = self._spec(e, run.seed, sampled, samples, e.max_new_tokens)
        model = adapter.model if adapter is not None else self.model
        checks["eval_prompts"] = check_prompts(prompts, self.tokenizer)
        if adapter is not None:
            checks["adapter"] = check_logit_change(adapter, self.tokenizer, prompts, spec)
            if run.method.merge:
                adapter.merge()  # LoRA only (config validation); the checks below then see the merged path
        with adapter.active() if adapter is not None else contextlib.nullcontext():
            checks["generation"] = check_generation(model, self.tokenizer, prompts, spec)
        log.info("preflight: %s", json.dumps(checks, sort_keys=True))
        cache_path = None
        if run.method.name == "baseline":
            cache_path = (
                self.cache / "eval" / f"{config_hash(self.cache_key('eval', run, task.VERSION))}.jsonl"
            )
            if cache_path.exists():
                log.info("evaluate: frozen-model evaluation from cache %s", cache_path.name)
                return records.read_jsonl(cache_path)
        rows = self._decode_and_score(model, adapter, task, examples, prompts, spec, "evaluate")
        if cache_path is not None:
            records.write_jsonl(cache_path, rows)
        return rows

    def evaluate_selection(self, run: PlannedRun, task, adapter) -> list[dict]:
        """selection.split=heldout: a selection arm's per-sample records on the held-out training slice, decoded
        as its evaluation was. Called after `evaluate`, whose preflight checks (and LoRA merge) still hold."""
        e = run.eval
        sampled = e.mode == "sampled"
        examples = heldout_slice(task, run.selection.heldout)[: run.eval_task.n_eval]  # smoke caps n_eval
        prompts = [task.build_prompt(ex, self.tokenizer) for ex in examples]
        spec = self._spec(e, run.seed, sampled, e.samples if sampled else 1, e.max_new_tokens)
        model = adapter.model if adapter is not None else self.model
        return self._decode_and_score(model, adapter, task, examples, prompts, spec, "evaluate (selection)")

    def _decode_and_score(self, model, adapter, task, examples, prompts, spec, desc: str) -> list[dict]:
        stats = GenerationStats()
        with adapter.active() if adapter is not None else contextlib.nullcontext():
            texts = generate(model, self.tokenizer, prompts, spec, self.progress, stats, desc=desc)
        samples = spec.samples
        flat_ex = [ex for ex in examples for _ in range(samples)]
        flat = [t for row in texts for t in row]
        scored = task.score(flat_ex, flat, progress=self.progress)
        rows = [{**s, "sample": j % samples, "completion": t} for j, (s, t) in enumerate(zip(scored, flat))]
        log.info("%s: %d problems x %d samples, %.0f new tokens/s", desc, len(examples), samples,
                 stats.tokens_per_second)  # fmt: skip
        return rows


def heldout_slice(task, n: int) -> list:
    """selection.split=heldout: the last `n` problems of the task's whole training split (HumanEval 64-79 for
    n=16), whatever cap n_train puts on collection; one line when nothing would be left to train on."""
    full = dataclasses.replace(task, n_train=None).load_split("train")
    if n >= len(full):
        raise PipelineError(
            f"selection.heldout={n}: {task.name} has {len(full)} training problems and collection needs some "
            "left; hold out fewer"
        )
    return full[-n:]


# Format failures (issue 12): completions whose code or answer could not be extracted, so a reader can see how
# much of a gain is format repair. The verdicts that count, per task, as each task's `score` writes them:
#   humaneval  "no_answer" (nothing left to run), and "error" when the program does not compile (SyntaxError,
#              IndentationError: prose or markdown where the body should be); other load errors are code mistakes
#   gsm8k      "no_answer" (no single clean number after `####` or in the last sentence)
#   math500    "no_answer" (no \\boxed{}); "hedged" has a box and is a grading decision, not a format failure
#   spider     "no_answer" (no SELECT/WITH statement); its "error" is SQL that was extracted and failed to run
FORMAT_FAILURE_VERDICTS = {"no_answer"}
UNCOMPILABLE = ("SyntaxError", "IndentationError", "TabError")


def is_format_failure(row: dict) -> bool:
    """True when the completion behind one per-sample record gave no extractable code or answer (rule above)."""
    if row.get("verdict") in FORMAT_FAILURE_VERDICTS:
        return True
    if row.get("task") == "humaneval" and row.get("verdict") == "error":
        last = (str(row.get("detail") or "").strip().splitlines() or [""])[-1]
        return last.startswith(UNCOMPILABLE)
    return False


def metrics_from(rows: list[dict], ks: list[int], sampled: bool) -> dict[str, float]:
    """pass@k in percent: the unbiased estimator over samples; for greedy runs, the share correct. Also
    `format_failure`: the percent of evaluated completions (every sample) with no extractable code or answer."""
    metrics = {m: 100.0 * v for m, v in pass_at_k_from_records(rows, ks if sampled else [1]).items()}
    failures = 100.0 * sum(map(is_format_failure, rows)) / max(len(rows), 1)
    return {"n_eval": float(len({r["id"] for r in rows})), **metrics, "format_failure": failures}


def execute_run(pipe: Pipeline, run: PlannedRun) -> dict[str, float]:
    """Every stage of one run; writes the run directory and, last, its `done` marker.

    A run that fails before it trained anything leaves no directory behind (its log line is on the console);
    one that fails after training keeps its saved adapter, so a rerun resumes from there.
    """
    run_dir = pipe.results / run.run_id
    fresh = not run_dir.exists()
    try:
        return _execute_run(pipe, run, run_dir)
    except BaseException:
        if fresh and not (run_dir / "adapter").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _execute_run(pipe: Pipeline, run: PlannedRun, run_dir: Path) -> dict[str, float]:
    from s0.adapters.base import weights_checksum

    eval_task = task_for(run.eval_task, pipe.cfg.sandbox.isolation)
    train_task = task_for(run.task, pipe.cfg.sandbox.isolation) if run.method.name != "baseline" else None
    eval_task.load_split("eval")  # fail on missing data before anything is written or loaded
    if train_task is not None:
        train_task.load_split("train")
    timing: dict[str, float] = {}  # seconds per stage, the weights checksum included (issue 13)
    t0 = run_start = time.perf_counter()
    pipe._ensure_model(run)
    timing["load_model"] = time.perf_counter() - t0
    with run_log(run_dir):
        log.info("run %s: %s %s seed %d (%s)", run.run_id, run.model.name, run.arm, run.seed, run.describe())
        records.write_json(
            run_dir / "run.json", {**dataclasses.asdict(run), "run_id": run.run_id, "smoke": pipe.cfg.smoke}
        )
        records.atomic_write(run_dir / "config.yaml", run_config_yaml(run, pipe.resolved))
        prov = {**provenance(pipe.cfg.paths.root), "backends": pipe.backends, "model_load": pipe.load_report}
        if (
            run.method.name in STATE_METHODS
        ):  # how the state reaches each kind's kernel (Mamba-1: not through it)
            prov["state_injection"] = kernel_notes([r.kind for r in recurrent_layers(pipe.model)])
        records.write_json(run_dir / "provenance.json", prov)
        seed_everything(run.seed)
        # Once per model load (a load makes a new model object); every run still verifies it at its end.
        t0 = time.perf_counter()
        checksum = getattr(pipe.model, "s0_weights_checksum", None)
        if checksum is None:
            checksum = pipe.model.s0_weights_checksum = weights_checksum(pipe.model)
            timing["checksum_at_load"] = time.perf_counter() - t0
        adapter, info, checks, trainable, selection_rows = None, {}, {}, 0, []
        try:
            if train_task is not None:
                t0 = time.perf_counter()
                pairs, info = pipe.collect(run, train_task)
                timing["collect"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                adapter = pipe.train(run, pairs, run_dir)
                trainable = adapter.num_trainable()
                timing["train"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = pipe.evaluate(run, eval_task, adapter, checks)
            timing["evaluate"] = time.perf_counter() - t0
            if run.selection.evaluate:  # selection.split=heldout: also scored on the held-out training slice
                t0 = time.perf_counter()
                selection_rows = pipe.evaluate_selection(run, train_task, adapter)
                timing["evaluate_selection"] = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError as err:
            raise PipelineError(_oom_message("this run")) from err
        except PreflightError as err:
            raise PipelineError(f"preflight check failed for run {run.run_id} ({run.arm}): {err}") from err
        finally:
            if adapter is not None:
                adapter.deactivate()
                getattr(adapter, "remove", lambda: None)()
        t0 = time.perf_counter()
        if weights_checksum(pipe.model) != checksum:
            raise PipelineError(f"run {run.run_id} changed the frozen weights; refusing to record it")
        timing["checksum_verify"] = time.perf_counter() - t0
        metrics = metrics_from(rows, run.eval.ks, run.eval.mode == "sampled")
        # the solutions actually trained on (after max_train_examples), as train.json records them
        train_log = json.loads((run_dir / "train.json").read_text()) if adapter else {}
        metrics["n_train"] = float(train_log.get("n_pairs", 0))
        metrics["trainable_params"] = float(trainable)  # what each method really trained (Sec 4.3 counts)
        # tokens per micro-batch and how they were chosen (configured or measured from the device's memory)
        prov["train_token_budget"] = train_log.get("token_budget")
        records.write_json(run_dir / "provenance.json", {**prov, "preflight": checks})
        records.write_jsonl(run_dir / "samples.jsonl", rows)
        recorded = dict(metrics)
        if selection_rows:  # nested: no reader pools them with eval numbers (s0.run.records: split=selection)
            recorded["selection"] = metrics_from(selection_rows, run.eval.ks, run.eval.mode == "sampled")
            records.write_jsonl(run_dir / "samples_selection.jsonl", selection_rows)
        records.write_json(run_dir / "metrics.json", recorded)
        timing["total"] = time.perf_counter() - run_start
        records.write_json(run_dir / "timing.json", timing)
        if info:
            records.write_json(run_dir / "collect.json", info)
        if pipe.cfg.logger.name == "wandb":
            log_to_wandb(pipe.cfg.logger, run, run_dir, metrics)
        records.mark_done(run_dir, {"metrics": recorded, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info("done %s: %s", run.run_id, ", ".join(f"{k}={v:.1f}" for k, v in metrics.items()))
    return metrics


def run_config_yaml(run: PlannedRun, resolved: dict | None) -> str:
    """The config this run really used: the command's resolved config with the run's own model, method, tasks,
    decoding and seed in place of the command-level ones (smoke caps, tiny model and arm fields applied)."""
    from omegaconf import OmegaConf

    used = {
        **(resolved or {}),
        "seed": run.seed,
        "arm": run.arm,
        "model": dataclasses.asdict(run.model),
        "method": dataclasses.asdict(run.method),
        "task": dataclasses.asdict(run.task),
        "eval_task": dataclasses.asdict(run.eval_task),
        "collect": dataclasses.asdict(run.collect),
        "eval": dataclasses.asdict(run.eval),
        "protocol": dataclasses.asdict(run.protocol),
    }
    header = f"# run {run.run_id}: the config this run used (arm '{run.arm}', seed {run.seed})\n"
    return header + OmegaConf.to_yaml(OmegaConf.create(used))


def log_to_wandb(logger_cfg, run: PlannedRun, run_dir: Path, metrics: dict[str, float]) -> None:
    """Optional mirror of a finished run in Weights & Biases (offline by default; the records stay the truth)."""
    try:
        import wandb
    except ImportError as err:
        raise PipelineError("logger=wandb needs the wandb package: pip install -e '.[wandb]'") from err
    train_log = run_dir / "train.json"
    wb = wandb.init(project=logger_cfg.project, mode=logger_cfg.mode, name=f"{run.arm}-s{run.seed}-{run.run_id}",
                    group=run.experiment, config=run.key(), dir=str(run_dir), reinit=True)  # fmt: skip
    if train_log.exists():
        for step, loss in enumerate(json.loads(train_log.read_text())["losses"], 1):
            wb.log({"train/loss": loss}, step=step)
    wb.summary.update(metrics)
    wb.finish()


def run_all(
    runs: list[PlannedRun], cfg: RunConfig, resolved: dict | None = None, progress: bool = True
) -> dict:
    """Execute every unfinished run, skipping finished ones; returns {run_id: metrics or 'skipped'}."""
    pipe = Pipeline(cfg, resolved, progress)
    outcome: dict[str, Any] = {}
    # One model load per model: runs are grouped by model, in plan order otherwise.
    order = sorted(range(len(runs)), key=lambda i: (config_hash(runs[i].key()["model"]), i))
    pending = []
    for i in order:
        run = runs[i]
        run_dir = pipe.results / run.run_id
        if run.run_id in outcome or records.is_done(run_dir):
            records.add_membership(run_dir, run.experiment, run.arm)
            outcome.setdefault(run.run_id, "skipped")
            log.info("skip %s (%s %s seed %d): already done", run.run_id, run.model.name, run.arm, run.seed)
            continue
        outcome[run.run_id] = None
        pending.append(run)
    start = time.perf_counter()
    for k, run in enumerate(pending, 1):
        elapsed = time.perf_counter() - start
        left = f", about {_duration(elapsed / (k - 1) * (len(pending) - k + 1))} left" if k > 1 else ""
        log.info("run %d of %d: %s %s seed %d; %s elapsed%s", k, len(pending), run.model.name, run.arm, run.seed,
                 _duration(elapsed), left)  # fmt: skip
        outcome[run.run_id] = execute_run(pipe, run)
        records.add_membership(pipe.results / run.run_id, run.experiment, run.arm)
    if len(pending) > 1:
        log.info("%d runs done in %s", len(pending), _duration(time.perf_counter() - start))
    if cfg.analyses and cfg.experiment:
        from s0.run.mechanism import run_mechanism

        pipe.model = None  # the analyses load the model with the saved S0 state themselves
        for path in run_mechanism(cfg.paths.results, cfg.experiment, device=cfg.device):
            log.info("mechanism analyses written to %s", path)
    return outcome
