"""A prototype greedy decode engine for Qwen3.5: static cache, no per-step host sync, optional CUDA graph.

    dec = StaticGreedyDecoder(model, batch_size=84, max_len=prompt_width + new_tokens)
    tokens = dec.generate(input_ids, attention_mask, new_tokens=512, graph=True)   # (B, new_tokens) on device

Why it exists (measured against HF `generate` by eval_throughput.py and overhead.py): HF's sampling loop on CUDA
reads `unfinished_sequences.max() == 0` on the host after every step (transformers 5.23 `StopCheck`; the deferred
variant is enabled for "mps" only), so the CPU cannot queue step t+1 while the GPU runs step t, and every step also
rebuilds masks, position ids and a growing `DynamicCache` (torch.cat per attention layer). This loop

  * pre-allocates a `StaticCache` (attention K/V at fixed addresses; the GDN conv/recurrent states are updated in
    place by transformers already),
  * passes a ready-made mask dict (`{"full_attention": 4D bool, "linear_attention": 2D or None}`), so transformers
    builds no mask and does no `torch.all(...)` host check,
  * keeps tokens, positions and the mask in device buffers updated on the device,
  * never reads anything back until the end, so eager steps overlap with the GPU, and one step can be captured in
    a CUDA graph and replayed (one launch per step instead of ~1.5k).

Greedy tokens equal HF `generate`'s on the same left-padded batch (tests/test_benchmarks.py checks this on the
tiny model). The class ignores EOS (the fixed-length setting of the benchmarks) and is kept as the measured baseline
of the bare loop; the harness's engine is `s0.decode.decode` (the same loop plus EOS, sampling, chunked prefill,
adapters, FalconH1 and Qwen2; `eval.engine=auto` on CUDA), which benchmarks time through `decode(..., timings={})`.
This prototype is Qwen3.5 only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class StaticGreedyDecoder:
    """Greedy decoding of one left-padded batch into a preallocated StaticCache."""

    def __init__(self, model: nn.Module, batch_size: int, max_len: int):
        from transformers import StaticCache

        self.model, self.batch_size, self.max_len = model, batch_size, max_len
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        b = batch_size
        self.tok = torch.zeros(b, 1, dtype=torch.long, device=self.device)  # next input token
        self.pos = torch.zeros(b, 1, dtype=torch.long, device=self.device)  # its rotary position
        self.slot = torch.zeros(
            1, dtype=torch.long, device=self.device
        )  # its cache index (same for every row)
        self.mask = torch.zeros(
            b, 1, 1, max_len, dtype=torch.bool, device=self.device
        )  # keys a decode query sees
        self.graph: torch.cuda.CUDAGraph | None = None
        self._warm: list[torch.Tensor] = []  # tokens emitted by the eager warmup steps of `capture`
        self.prefilled = False
        # Host-side count of cache slots written. An index past max_len inside index_copy_ would be a device-side
        # assert that poisons the CUDA context for the rest of the benchmark run, so refuse before that.
        self.used = 0

    # ------------------------------------------------------------------ prefill
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the prompt (B, P), left padded; returns the first generated token (B,)."""
        b, p = input_ids.shape
        if b != self.batch_size or p >= self.max_len:
            raise ValueError(f"batch {b} x {p} does not fit decoder {self.batch_size} x {self.max_len}")
        self.cache.reset()
        valid = attention_mask.to(self.device, torch.bool)  # (B, P)
        # Positions count from each row's first real token, as HF generate does (pads get 1, never read).
        pos = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
        causal = torch.ones(p, p, dtype=torch.bool, device=self.device).tril()
        allowed = causal[None] & valid[:, None, :]  # (B, P, P): real keys at or before the query
        # A pad query sees no key; let it see everything instead of producing NaN (its output is never used).
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        full = torch.zeros(b, 1, p, self.max_len, dtype=torch.bool, device=self.device)
        full[:, 0, :, :p] = allowed
        masks = {"full_attention": full, "linear_attention": None if bool(valid.all()) else valid}
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=masks,
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[:, -1].argmax(-1)
        self.tok.copy_(first[:, None])
        self.pos.copy_(pos[:, -1:] + 1)
        self.slot.fill_(p)
        self.used = p
        self.mask.zero_()
        self.mask[:, 0, 0, :p] = valid
        self.prefilled = True
        # A captured graph stays valid: every buffer it reads (tokens, positions, slot, mask, cache tensors) was
        # refilled in place above. Call `release_graph()` when the model's code path changes (another adapter).
        return first

    # ------------------------------------------------------------------ decode
    def _advance(self) -> None:
        if self.used >= self.max_len:
            raise RuntimeError(
                f"static cache full ({self.max_len} slots): build the decoder with a larger max_len"
            )
        self.used += 1

    def _step(self) -> torch.Tensor:
        """One decode step on the device buffers; no host sync, so it can be captured in a CUDA graph."""
        self.mask.index_fill_(3, self.slot, True)  # the new token's own key
        out = self.model(
            input_ids=self.tok,
            attention_mask={"full_attention": self.mask, "linear_attention": None},
            position_ids=self.pos,
            past_key_values=self.cache,
            use_cache=True,
        )
        nxt = out.logits[:, -1].argmax(-1)
        self.tok.copy_(nxt[:, None])
        self.pos.add_(1)
        self.slot.add_(1)
        return self.tok

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One eager step; returns the token buffer (B, 1), overwritten by the next step."""
        if not self.prefilled:
            raise RuntimeError("prefill first")
        self._advance()
        if self.graph is not None:
            self.graph.replay()
            return self.tok
        return self._step()

    def release_graph(self) -> None:
        self.graph = None

    @torch.no_grad()
    def capture(self, warmup: int = 2) -> None:
        """Capture one decode step as a CUDA graph. The `warmup` eager steps it runs first are real decode steps
        (they advance the cache and emit tokens); `generate` accounts for them."""
        if self.device.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        self._warm = []
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._advance()
                self._warm.append(self._step().clone())
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self.graph = graph

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int, graph: bool = False
    ) -> torch.Tensor:
        """(B, new_tokens) greedy tokens on the device (the first comes from the prefill)."""
        if input_ids.shape[1] + new_tokens > self.max_len:
            raise ValueError("max_len too small for prompt + new tokens")
        outs = [self.prefill(input_ids, attention_mask)[:, None]]
        if graph and self.graph is None and new_tokens > 3:
            self.capture(warmup=2)
            outs.extend(self._warm)
        while len(outs) < new_tokens:
            self._advance()
            if graph and self.graph is not None:
                self.graph.replay()
                outs.append(self.tok.clone())
            else:
                outs.append(self._step().clone())
        return torch.cat(outs, dim=1)


@torch.no_grad()
def left_pad(seqs: list[list[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask (B, max len), left padded."""
    width = max(map(len, seqs))
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


class IdTokenizer:
    """A stand-in tokenizer for `s0.generation.generate` on pre-drawn token ids: prompt "p17" encodes to the ids
    drawn for prompt 17. Its EOS id lies outside the vocabulary, so greedy decoding runs the full length (random
    weights emit any id, the real EOS included)."""

    def __init__(self, prompts: list[list[int]], vocab_size: int, pad_id: int = 0):
        self.prompts, self.pad_token_id, self.eos_token_id = prompts, pad_id, vocab_size

    def texts(self) -> list[str]:
        return [f"p{i}" for i in range(len(self.prompts))]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(self.prompts[int(text[1:])])}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))
