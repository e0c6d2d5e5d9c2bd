"""Figure 2: the S0 computation graph, drawn from a model's real layer layout.

    layout = layout_from_model(build_model("qwen3_5", arch, weights="meta"))   # no memory, no weights
    fig2(layout, "Qwen3.5-4B").savefig("paper_figures/fig2.pdf")

Each decoder layer is one box in order (wrapping into rows): recurrent mixers (GatedDeltaNet, or FalconH1's
Mamba-2 in parallel with attention) get a teal S0 chip injected at t=0; attention-only layers are grey. The
legend counts the learned state parameters from the layout, so the figure says what the model really has.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from s0.report.figures import TEAL

GREY, FROZEN = "#d9d9d9", "#f2f2f2"


@dataclass(frozen=True)
class LayerBox:
    index: int
    kind: str  # "gdn", "attention", "mamba2+attention" (FalconH1: both in parallel)
    state_shape: tuple[int, ...] | None = None  # recurrent state per sequence, batch excluded

    @property
    def recurrent(self) -> bool:
        return self.state_shape is not None

    @property
    def state_numel(self) -> int:
        n = 1
        for d in self.state_shape or ():
            n *= d
        return n if self.state_shape else 0


def layout_from_model(model) -> list[LayerBox]:
    """One LayerBox per decoder layer, from `recurrent_layers` and the config's layer count."""
    from s0.adapters.kinds import recurrent_layers

    rec = {r.index: r for r in recurrent_layers(model)}
    cfg = model.config
    n = cfg.num_hidden_layers
    types = getattr(cfg, "layer_types", None) or ["attention"] * n
    boxes = []
    for i in range(n):
        r = rec.get(i)
        if r is None:
            boxes.append(LayerBox(i, "attention"))
        elif r.kind == "mamba2" and types[i] != "linear_attention":
            boxes.append(LayerBox(i, "mamba2+attention", tuple(r.state_shape)))
        else:
            boxes.append(LayerBox(i, r.kind, tuple(r.state_shape)))
    return boxes


def _count(n: int) -> str:
    """12582912 -> 12.6M, 4210000000 -> 4.21B, 3072 -> 3.1K."""
    for div, unit, fmt in ((1e9, "B", ".2f"), (1e6, "M", ".1f"), (1e3, "K", ".1f")):
        if n >= div:
            return f"{n / div:{fmt}}{unit}"
    return str(n)


LABEL = {"gdn": "GDN", "attention": "Attn", "mamba2+attention": "Mamba-2\n‖ Attn"}


def fig2(
    layout: list[LayerBox], model_name: str = "", total_params: int | None = None, per_row: int = 8
) -> Figure:
    """The computation graph of `layout`: input -> layers (S0 into each recurrent one) -> logits."""
    rows = max(1, -(-len(layout) // per_row))
    fig = Figure(figsize=(11, 1.25 * rows + 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-1.75, per_row * 1.25 + 1.3)
    ax.set_ylim(-rows * 1.25 - 0.9, 1.0)
    ax.axis("off")
    w, h = 0.95, 0.55
    pos = {b.index: ((k % per_row) * 1.25, -(k // per_row) * 1.25) for k, b in enumerate(layout)}

    def box(x, y, text, face, edge, lw=1.0, fs=7):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=face, edgecolor=edge, lw=lw))  # fmt: skip
        ax.text(x, y, text, ha="center", va="center", fontsize=fs)

    def arrow(a, b, color="black", style="-|>", lw=0.8, ls="-"):
        ax.add_patch(
            FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=8, color=color, lw=lw, linestyle=ls)
        )

    box(-1.2, 0, "Input\ntokens", "white", "black")
    prev = (-1.2 + w / 2, 0)
    for b in layout:
        x, y = pos[b.index]
        face = FROZEN if b.recurrent else GREY
        box(x, y, f"{LABEL.get(b.kind, b.kind)} {b.index}", face, TEAL if b.recurrent else "#555555",
            lw=1.6 if b.recurrent else 0.8, fs=6.5 if "\n" in LABEL.get(b.kind, "") else 7)  # fmt: skip
        if prev[1] == y:
            arrow(prev, (x - w / 2, y))
        else:  # wrap to the next row
            arrow(prev, (prev[0] + 0.12, prev[1]), style="-")
            arrow((x - w / 2 - 0.12, y), (x - w / 2, y))
            ax.plot([prev[0] + 0.12, prev[0] + 0.12, x - w / 2 - 0.12, x - w / 2 - 0.12],
                    [prev[1], y + 0.8, y + 0.8, y], color="black", lw=0.8)  # fmt: skip
        if b.recurrent:
            sx, sy = x - 0.25, y + 0.52
            ax.add_patch(FancyBboxPatch((sx - 0.14, sy - 0.09), 0.28, 0.18, boxstyle="round,pad=0.01",
                                        facecolor=TEAL, edgecolor=TEAL))  # fmt: skip
            ax.text(sx, sy, f"$S_0^{{({b.index})}}$", ha="center", va="center", fontsize=5.5, color="white")
            arrow((sx, sy - 0.09), (sx, y + h / 2), color=TEAL, lw=1.0)
        prev = (x + w / 2, y)
    lx, ly = prev[0] + 0.55, prev[1]
    box(lx + w / 2 - 0.05, ly, "Output\nlogits", "white", "black")
    arrow(prev, (lx - 0.05, ly))

    rec = [b for b in layout if b.recurrent]
    learned = sum(b.state_numel for b in rec)
    shapes = sorted({"×".join(map(str, b.state_shape)) for b in rec})
    share = f" ({100 * learned / total_params:.1f}% of {_count(total_params)})" if total_params else ""
    legend = [
        (TEAL, f"Learned: {len(rec)} × S0 ({', '.join(shapes) or '—'}) = {_count(learned)}{share}"),
        ("#555555", f"All weights frozen ({len(layout)} layers: {len(rec)} recurrent, {len(layout) - len(rec)} attention-only)"),
        (TEAL, "Injected at t = 0 only; t ≥ 1: the state evolves naturally, zero added cost"),
    ]  # fmt: skip
    for k, (color, text) in enumerate(legend):
        ax.text(-1.7, -rows * 1.25 + 0.05 - 0.3 * k, "■ " + text, color=color, fontsize=8, va="center")
    ax.set_title(f"S0 tuning computation graph{': ' + model_name if model_name else ''}", fontsize=10)
    return fig


def layout_from_conf(name: str) -> tuple[list[LayerBox], str, int]:
    """(layout, display name, parameter count) of conf/model/<name>.yaml, built on the meta device."""
    from pathlib import Path

    import yaml

    from s0.models import TINY_ARCH, build_model, count_parameters

    path = Path(__file__).resolve().parents[2] / "conf" / "model" / f"{name}.yaml"
    cfg = yaml.safe_load(path.read_text())
    arch = cfg.get("arch") or TINY_ARCH[cfg["family"]]
    model = build_model(cfg["family"], arch, weights="meta")
    names = {"qwen3_5_4b": "Qwen3.5-4B", "falcon_h1_7b": "FalconH1-7B", "qwen3_5_0_8b": "Qwen3.5-0.8B",
             "qwen3_5_2b": "Qwen3.5-2B", "qwen3_5_9b": "Qwen3.5-9B"}  # fmt: skip
    return layout_from_model(model), names.get(name, name), count_parameters(model)
