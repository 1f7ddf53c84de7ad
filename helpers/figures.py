"""Pictures the notebooks draw: the Llama 3 data-flow diagram, and plots whose labels the tests check.

Every size in the diagram is read from the model's `Params`, so the same call draws the tiny
model and the 8B correctly. Each function returns its matplotlib Figure; a notebook shows it
with `plt.show()`.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

HIGHLIGHT = "#ffd54f"  # the "you are here" boxes
PLAIN = "#eef2f7"


def llama_boxes(p):
    """The diagram's boxes, top to bottom: (name, text), with shapes for T tokens from `p`."""
    q_heads, kv_heads = f"{p.n_heads}×{p.head_dim}", f"{p.n_kv_heads}×{p.head_dim}"
    return [
        ("tokens", "token ids: (T,)"),
        ("embedding", f"embedding: tok_embeddings[ids]   ({p.vocab_size}, {p.dim}) → x (T, {p.dim})"),
        ("attention_norm", f"RMSNorm (attention_norm)   (T, {p.dim})"),
        ("qkv", f"q = x·wqᵀ (T, {q_heads})    k = x·wkᵀ, v = x·wvᵀ (T, {kv_heads})"),
        ("rope", f"RoPE on q and k: {p.head_dim // 2} pairs turned by position, θ = {p.rope_theta:g}"),
        ("kv_cache", f"KV cache: keep k, v of every earlier position (T, {kv_heads}) per layer"),
        ("scores", f"GQA: {p.n_rep} query heads per k/v head; scores q·kᵀ/√{p.head_dim} + causal mask"
                   f" ({p.n_heads}, T, T)"),
        ("softmax", f"softmax → weights·v, heads joined   (T, {p.n_heads * p.head_dim})"),
        ("wo", f"wo   (T, {p.n_heads * p.head_dim}) → (T, {p.dim})"),
        ("add_attention", "x + attention   (residual)"),
        ("ffn_norm", f"RMSNorm (ffn_norm)   (T, {p.dim})"),
        ("ffn", f"SwiGLU: w2(silu(w1·x) * w3·x)   (T, {p.dim}) → (T, {p.hidden_dim}) → (T, {p.dim})"),
        ("add_ffn", "h + feed-forward   (residual)"),
        ("norm", f"RMSNorm (norm)   (T, {p.dim})"),
        ("output", f"output   (T, {p.dim}) → logits (T, {p.vocab_size})"),
        ("next_token", f"last row of logits → next token (argmax or sample), append, repeat"),
    ]


def draw_llama(params, highlight=None):
    """Llama 3's forward pass as boxes with this model's shapes; the boxes named in `highlight` in yellow."""
    highlight = {highlight} if isinstance(highlight, str) else set(highlight or ())
    boxes = llama_boxes(params)
    unknown = highlight - {name for name, _ in boxes}
    if unknown:
        raise ValueError(f"no box named {sorted(unknown)}; the boxes are {[name for name, _ in boxes]}")
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(boxes) + 0.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(-len(boxes) + 0.3, 1.2)
    ax.axis("off")
    row_of = {name: row for row, (name, _) in enumerate(boxes)}
    top, bottom = -row_of["attention_norm"] + 0.45, -row_of["add_ffn"] - 0.45
    ax.add_patch(Rectangle((0.3, bottom), 9.3, top - bottom, fill=False, ls="--", ec="grey"))
    ax.text(9.75, (top + bottom) / 2, f"× n_layers = {params.n_layers}", rotation=90, ha="left", va="center",
            color="grey", fontsize=10)
    for start, add in (("attention_norm", "add_attention"), ("ffn_norm", "add_ffn")):  # the residual paths
        y0, y1 = -row_of[start] + 0.5, -row_of[add]
        ax.plot([5, 9.1, 9.1], [y0, y0, y1], color="#607d8b", lw=1)
        ax.annotate("", (8.5, y1), (9.1, y1), arrowprops=dict(arrowstyle="->", color="#607d8b"))
    for row, (name, text) in enumerate(boxes):
        y, here = -row, name in highlight
        box = FancyBboxPatch((1.5, y - 0.3), 7.0, 0.6, boxstyle="round,pad=0.02", gid=name,
                             fc=HIGHLIGHT if here else PLAIN, ec="#c62828" if here else "#607d8b",
                             lw=2 if here else 1)
        ax.add_patch(box)
        ax.text(1.65, y, text, va="center", fontsize=8.5, gid=name)
        if row:
            ax.annotate("", (5, y + 0.32), (5, y + 0.68), arrowprops=dict(arrowstyle="->", color="#607d8b"))
        if here:
            ax.text(1.4, y, "here ▶", ha="right", va="center", fontsize=9, color="#c62828", fontweight="bold")
    ax.set_title(f"Llama 3 forward pass, shapes for T tokens (dim {params.dim}, {params.n_layers} layers)")
    fig.tight_layout()
    return fig
