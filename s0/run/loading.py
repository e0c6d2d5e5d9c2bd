"""What a run needs before it can start, shared by the pipeline and the mechanism analyses (s0.run.mechanism):
the device, the task object of a TaskConfig, and the frozen base model with its tokenizer.

    model, tok = load_model(run, resolve_device("auto"))   # run: anything with a .model ModelConfig
    task = task_for(run.eval_task, isolation="required")

A level below s0.run.pipeline, so s0.run.mechanism can load models without importing the pipeline that calls it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from s0.run.plan import PlannedRun, choose_tokenizer, resolved_arch

log = logging.getLogger("s0")


class PipelineError(RuntimeError):
    """A run cannot go on; the message says why and which knob to turn."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def task_for(task_cfg, isolation: str | None = None):
    """The s0.tasks object of a TaskConfig (no model code there); `isolation` (sandbox.isolation) sets the
    sandbox policy its grading runs under: required (default) or weak."""
    from s0 import sandbox
    from s0.tasks import get_task

    if isolation is not None:
        sandbox.set_isolation(isolation)
        if task_cfg.name in (
            "humaneval",
            "math500",
            "spider",
        ):  # graded in the sandbox: refuse before any work
            try:
                sandbox.checked_isolation()
            except sandbox.SandboxError as err:
                raise PipelineError(str(err)) from None

    options: dict[str, Any] = {
        "data_root": task_cfg.data_root,
        "n_train": task_cfg.n_train,
        "n_eval": task_cfg.n_eval,
    }
    if task_cfg.name == "spider":
        options["db_dir"] = task_cfg.db_dir
    # the protocol's user message, every task (s0.run.plan.apply_protocol sets it)
    options["prompt_template"] = task_cfg.prompt_template
    return get_task(task_cfg.name, **{k: v for k, v in options.items() if v is not None or k == "data_root"})


def load_model(run: PlannedRun, device: torch.device):
    """The frozen base model and its tokenizer, in the run's dtype (fp32 on CPU, where bf16 is slow).

    The tokenizer (model.tokenizer, resolved by `choose_tokenizer`) is logged and recorded in the model's load
    report, which the pipeline writes to provenance.json as `model_load.tokenizer`."""
    from s0.models import build_model, build_tokenizer

    m = run.model
    kind = choose_tokenizer(m)  # before the build, so a refused model.tokenizer costs no build
    dtype = m.dtype if device.type == "cuda" else "float32"
    model = build_model(
        m.family,
        resolved_arch(m),
        hub_id=m.hub_id,
        weights=m.weights,
        dtype=dtype,
        device=device,
        revision=m.revision,
    )
    tokenizer = build_tokenizer(m.hub_id, kind, revision=m.revision)
    record = tokenizer_record(m, kind, tokenizer)
    model.s0_load_report["tokenizer"] = record
    log.info("tokenizer: %s (model.tokenizer=%s; %s)", kind, m.tokenizer, record["source"])
    return model, tokenizer


def tokenizer_record(m, kind: str, tokenizer) -> dict[str, Any]:
    """What provenance.json says about the tokenizer a run used."""
    from s0.models.build import PROXY_SOURCE

    source = {
        "hub": f"{m.hub_id} (revision {m.revision or 'latest'})",
        "proxy": PROXY_SOURCE,
        "tiny": "byte-level, one token per UTF-8 byte (s0.models.build.tiny_tokenizer)",
    }[kind]
    return {"kind": kind, "requested": m.tokenizer, "source": source, "vocab": len(tokenizer)}
