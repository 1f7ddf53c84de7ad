"""Diagrams the notebooks draw: the Llama 3 data flow, grouped-query attention, tensor shapes, the chat layout.

Every size in the diagram is read from the model's `Params`, so the same call draws the tiny
model and the 8B correctly. Each function returns its matplotlib Figure; a notebook shows it
with `plt.show()`. The plots of numbers are in helpers/plots.py, and importable from here too.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

from .params import DEFAULT_SHAPE, SHAPES, params_from_dict
from .plots import (  # noqa: F401
    HIGHLIGHT,
    draw_attention_heads,
    draw_int8_errors,
    draw_kv_cache,
    draw_logit_lens,
    draw_rms_norm,
    draw_rope,
    draw_score_by_distance,
    draw_silu,
    draw_top_k_top_p,
    draw_top_tokens,
)

PLAIN = "#eef2f7"
# The column beside the model's shapes: Meta-Llama-3-8B's.
LLAMA3_8B = (SHAPES[DEFAULT_SHAPE].name, params_from_dict(SHAPES[DEFAULT_SHAPE].params))


def draw_rope_pairs(head_dim):
    """One head's numbers x_0 ... x_(head_dim-1), twice: the pairs RoPE turns together in Meta's layout
    (adjacent) and in Hugging Face's (half a head apart), pair j drawn in colour j in both."""
    half, colours = head_dim // 2, plt.get_cmap("tab20" if head_dim > 20 else "tab10")
    pair_of = {"Meta: adjacent pairs (x_2j, x_2j+1)": lambda i: i // 2,
               "Hugging Face: half-split pairs (x_j, x_j+head_dim/2)": lambda i: i % half}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * head_dim), 3.6))
    for row, (title, pair) in enumerate(pair_of.items()):
        y = 2.6 * (1 - row)
        ax.text(-0.6, y + 1.75, title, fontsize=9, ha="left")
        for i in range(head_dim):
            ax.add_patch(Rectangle((i, y), 0.9, 0.7, color=colours(pair(i) % colours.N), alpha=0.75))
            ax.text(i + 0.45, y + 0.35, f"x{i}", ha="center", va="center", fontsize=8)
        for j in range(half):
            a, b = [i for i in range(head_dim) if pair(i) == j]
            ax.annotate("", (b + 0.45, y + 0.7), (a + 0.45, y + 0.7), arrowprops={
                "arrowstyle": "-", "color": colours(j % colours.N), "connectionstyle": "arc3,rad=-0.3"})
    ax.set_xlim(-0.7, head_dim + 0.2)
    ax.set_ylim(-0.2, 4.6)
    ax.axis("off")
    fig.suptitle(f"one head of {head_dim} numbers: the same colour is one pair, turned by one angle", fontsize=10)
    return fig


def llama_boxes(p):
    """The diagram's boxes, top to bottom: (name, what the step does, its shapes for T tokens from `p`)."""
    q_heads, kv_heads = f"{p.n_heads}×{p.head_dim}", f"{p.n_kv_heads}×{p.head_dim}"
    return [
        ("tokens", "token ids", "(T,)"),
        ("embedding", "embedding: rows of tok_embeddings", f"({p.vocab_size}, {p.dim}) → (T, {p.dim})"),
        ("attention_norm", "RMSNorm (attention_norm)", f"(T, {p.dim})"),
        ("qkv", "q = x·wqᵀ; k = x·wkᵀ, v = x·wvᵀ", f"(T, {q_heads}); (T, {kv_heads})"),
        ("rope", "RoPE on q and k: pairs turned by position", f"{p.head_dim // 2} pairs, θ = {p.rope_theta:g}"),
        ("kv_cache", "KV cache: k, v of every earlier position", f"(T, {kv_heads}) per layer"),
        ("scores", "GQA scores q·kᵀ/√head_dim + causal mask",
         f"{p.n_rep} query heads per k/v head, √{p.head_dim}: ({p.n_heads}, T, T)"),
        ("softmax", "softmax → weights·v, heads joined", f"(T, {p.n_heads * p.head_dim})"),
        ("wo", "wo", f"(T, {p.n_heads * p.head_dim}) → (T, {p.dim})"),
        ("add_attention", "x + attention (residual)", f"(T, {p.dim})"),
        ("ffn_norm", "RMSNorm (ffn_norm)", f"(T, {p.dim})"),
        ("ffn", "SwiGLU: w2(silu(w1·x) * w3·x)", f"(T, {p.dim}) → (T, {p.hidden_dim}) → (T, {p.dim})"),
        ("add_ffn", "h + feed-forward (residual)", f"(T, {p.dim})"),
        ("norm", "RMSNorm (norm)", f"(T, {p.dim})"),
        ("output", "output layer → logits", f"(T, {p.dim}) → (T, {p.vocab_size})"),
        ("next_token", "last row → next token (argmax or sample), append, repeat", "1 id"),
    ]


def draw_llama(params, highlight=None, beside=LLAMA3_8B):
    """Llama 3's forward pass as boxes with this model's shapes; the boxes named in `highlight` in yellow.

    `beside` (a name and its params; by default Meta-Llama-3-8B's) adds a column with that model's
    shapes, so that a reader of the tiny model's notebook sees the real sizes too; None leaves it out,
    as does a model whose shapes are the same.
    """
    highlight = {highlight} if isinstance(highlight, str) else set(highlight or ())
    boxes = llama_boxes(params)
    unknown = highlight - {name for name, _, _ in boxes}
    if unknown:
        raise ValueError(f"no box named {sorted(unknown)}; the boxes are {[name for name, *_ in boxes]}")
    other = None
    if beside is not None and llama_boxes(beside[1]) != boxes:
        other = {name: shapes for name, _, shapes in llama_boxes(beside[1])}
    fig, ax = plt.subplots(figsize=(14 if other else 10.5, 0.45 * len(boxes) + 1.0))
    ax.set_xlim(0, 15.5 if other else 11.5)
    ax.set_ylim(-len(boxes) + 0.3, 1.4)
    ax.axis("off")
    row_of = {name: row for row, (name, _, _) in enumerate(boxes)}
    top, bottom = -row_of["attention_norm"] + 0.45, -row_of["add_ffn"] - 0.45
    ax.add_patch(Rectangle((0.3, bottom), 10.0, top - bottom, fill=False, ls="--", ec="grey"))
    ax.text(10.4, (top + bottom) / 2, f"× n_layers = {params.n_layers}", rotation=90, ha="left", va="center",
            color="grey", fontsize=10)
    for start, add in (("attention_norm", "add_attention"), ("ffn_norm", "add_ffn")):  # the residual paths
        y0, y1 = -row_of[start] + 0.5, -row_of[add]
        ax.plot([5, 9.8, 9.8], [y0, y0, y1], color="#607d8b", lw=1)
        ax.annotate("", (9.2, y1), (9.8, y1), arrowprops=dict(arrowstyle="->", color="#607d8b"))
    ax.text(5.35, 0.85, "this model", ha="center", fontsize=9, fontweight="bold")
    if other:
        ax.text(11.0, 0.85, f"{beside[0]} ({beside[1].n_layers} layers)", fontsize=9, fontweight="bold",
                color="#455a64")
    for row, (name, label, shapes) in enumerate(boxes):
        y, here = -row, name in highlight
        box = FancyBboxPatch((1.5, y - 0.3), 7.7, 0.6, boxstyle="round,pad=0.02", gid=name,
                             fc=HIGHLIGHT if here else PLAIN, ec="#c62828" if here else "#607d8b",
                             lw=2 if here else 1)
        ax.add_patch(box)
        ax.text(1.65, y, label, va="center", fontsize=8.5, gid=name)
        ax.text(9.1, y, shapes, va="center", ha="right", fontsize=8.5, family="monospace", gid=name)
        if other:
            ax.text(11.0, y, other[name], va="center", fontsize=8.5, family="monospace", color="#455a64",
                    gid=name)
        if row:
            ax.annotate("", (5, y + 0.32), (5, y + 0.68), arrowprops=dict(arrowstyle="->", color="#607d8b"))
        if here:
            ax.text(1.4, y, "here ▶", ha="right", va="center", fontsize=9, color="#c62828", fontweight="bold")
    ax.set_title(f"Llama 3 forward pass, shapes for T tokens (this model: dim {params.dim}, {params.n_layers} layers)")
    fig.tight_layout()
    return fig


def draw_gqa(params, kv_head=0):
    """Grouped-query attention: each query head joined to the key/value head it reads; `kv_head`'s group in yellow."""
    n_rep = params.n_rep
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * params.n_heads + 1), 3))
    ax.set_xlim(-0.5, params.n_heads - 0.5)
    ax.set_ylim(-0.6, 2.0)
    ax.axis("off")
    for h in range(params.n_heads):  # the query heads on top, each over the middle of its group below
        kv = h // n_rep
        here = kv == kv_head
        ax.add_patch(Rectangle((h - 0.4, 1.1), 0.8, 0.5, gid=f"q{h}", fc=HIGHLIGHT if here else PLAIN,
                               ec="#607d8b"))
        ax.text(h, 1.35, str(h), ha="center", va="center", fontsize=7)
        ax.plot([h, kv * n_rep + (n_rep - 1) / 2], [1.1, 0.4], color="#c62828" if here else "#90a4ae", lw=1)
    for kv in range(params.n_kv_heads):
        here = kv == kv_head
        ax.add_patch(Rectangle((kv * n_rep - 0.4, -0.1), n_rep - 0.2, 0.5, gid=f"kv{kv}",
                               fc=HIGHLIGHT if here else PLAIN, ec="#c62828" if here else "#607d8b"))
        ax.text(kv * n_rep + (n_rep - 1) / 2, 0.15, f"k/v {kv}", ha="center", va="center", fontsize=8)
    ax.text(-0.5, 1.8, f"{params.n_heads} query heads", fontsize=9)
    ax.text(-0.5, -0.45, f"{params.n_kv_heads} key/value heads (each read by {n_rep} query heads)", fontsize=9)
    ax.set_title(f"GQA: query head h reads key/value head h // {n_rep}")
    fig.tight_layout()
    return fig


def attention_tensors(p, n_tokens):
    """The tensors of one layer's attention: name -> (column, row, what it is, shape, the shape in symbols)."""
    t, h, kv, d = n_tokens, p.n_heads, p.n_kv_heads, p.head_dim
    per_head, per_kv_head = "(T, n_heads, head_dim)", "(T, n_kv_heads, head_dim)"
    return {
        "x": (5, 0, "xn, the normed x", (t, p.dim), "(T, dim)"),
        "q": (2, 1, "q", (t, h, d), per_head),
        "k": (5, 1, "k", (t, kv, d), per_kv_head),
        "v": (8, 1, "v", (t, kv, d), per_kv_head),
        "q_rope": (2, 2, "q rotated", (t, h, d), per_head),
        "k_rope": (5, 2, "k rotated", (t, kv, d), per_kv_head),
        "k_rep": (5, 3, "k repeated", (t, h, d), per_head),
        "v_rep": (8, 3, "v repeated", (t, h, d), per_head),
        "scores": (2, 4, "scores", (h, t, t), "(n_heads, T, T)"),
        "weights": (2, 5, "weights", (h, t, t), "(n_heads, T, T)"),
        "heads": (5, 6, "each head's output", (t, h, d), per_head),
        "joined": (5, 7, "heads joined", (t, h * d), "(T, n_heads·head_dim)"),
        "out": (5, 8, "attention output", (t, p.dim), "(T, dim)"),
    }


def draw_attention_shapes(params, n_tokens):
    """One layer's attention as tensors (boxes, with their shapes for `n_tokens` tokens read from `params`)
    and the operations between them (labelled arrows)."""
    p, tensors = params, attention_tensors(params, n_tokens)
    repeat = f"repeat each k/v head ×{p.n_rep}"
    steps = [("x", "q", "@ wqᵀ"), ("x", "k", "@ wkᵀ"), ("x", "v", "@ wvᵀ"),
             ("q", "q_rope", "RoPE"), ("k", "k_rope", "RoPE"),
             ("k_rope", "k_rep", repeat), ("v", "v_rep", repeat),
             ("q_rope", "scores", f"q·kᵀ per head, / √{p.head_dim}, + causal mask"), ("k_rep", "scores", ""),
             ("scores", "weights", "softmax over the keys"),
             ("weights", "heads", "weights @ v per head"), ("v_rep", "heads", ""),
             ("heads", "joined", "reshape: heads side by side"), ("joined", "out", "@ woᵀ")]
    step_y, width, height = 1.35, 2.5, 0.75
    fig, ax = plt.subplots(figsize=(10, 9))
    ax.set_xlim(0.5, 9.5)
    ax.set_ylim(-8 * step_y - 0.6, 0.6)
    ax.axis("off")
    for name, (x, row, what, shape, symbols) in tensors.items():
        y = -row * step_y
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                    gid=name, fc=PLAIN, ec="#607d8b"))
        ax.text(x, y + 0.14, f"{what}  {tuple(shape)}", ha="center", va="center", fontsize=9, gid=name)
        ax.text(x, y - 0.17, symbols, ha="center", va="center", fontsize=7.5, color="#546e7a", gid=name)
    for start, end, operation in steps:
        (x0, row0), (x1, row1) = tensors[start][:2], tensors[end][:2]
        y0, y1 = -row0 * step_y - height / 2, -row1 * step_y + height / 2
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="#607d8b"))
        if operation:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, operation, ha="center", va="center", fontsize=8,
                    color="#c62828", bbox=dict(fc="white", ec="none", pad=1))
    ax.set_title(f"one layer's attention for T = {n_tokens} tokens: dim {p.dim}, {p.n_heads} query heads and "
                 f"{p.n_kv_heads} key/value heads of {p.head_dim}")
    fig.tight_layout()
    return fig


CHAT_COLOURS = {"special token": "#ef9a9a", "role": "#ffcc80", "blank line closing a header": "#e0e0e0",
                "message text": "#bbdefb"}


def chat_kinds(tokenizer, ids):
    """What each id of a chat layout (helpers.chat_tokens) is: one of the keys of CHAT_COLOURS."""
    start, end = tokenizer.special_ids["<|start_header_id|>"], tokenizer.special_ids["<|end_header_id|>"]
    special = set(tokenizer.special_ids.values())
    kinds, in_header, previous = [], False, None
    for i in ids:
        if i in special:
            kinds.append("special token")
        elif in_header:
            kinds.append("role")
        elif previous == end:
            kinds.append("blank line closing a header")
        else:
            kinds.append("message text")
        in_header = i == start or (in_header and i != end)
        previous = i
    return kinds


def draw_chat_layout(tokenizer, ids, width=10.0):
    """A chat's token ids (helpers.chat_tokens) as cells in reading order, a new row after <|begin_of_text|>
    and each <|eot_id|>: each token's label and id, coloured by what it is. Ids that end with an open header
    (the assistant's) get a dashed cell after them: the model writes from there."""
    ids = [int(i) for i in ids]
    kinds = chat_kinds(tokenizer, ids)
    cells = [(label, str(i), kind) for i, label, kind in zip(ids, tokenizer.labels(ids), kinds, strict=True)]
    if ids[-2:-1] == [tokenizer.special_ids["<|end_header_id|>"]]:
        cells.append(("the model writes from here", "", "reply"))
    inch_per_char, pad, gap, row_height = 0.07, 0.08, 0.05, 0.55  # monospace at 8 points: about 0.067 in
    placed, row, x = [], 0, 0.0
    for (label, number, kind), i in zip(cells, ids + [None], strict=False):
        cell_width = inch_per_char * max(len(label), len(number)) + 2 * pad
        if x + cell_width > width:
            row, x = row + 1, 0.0
        placed.append((x, row, cell_width, label, number, kind))
        x += cell_width + gap
        if i in (tokenizer.bos_id, tokenizer.eot_id):
            row, x = row + 1, 0.0
    rows = max(row for _, row, *_ in placed) + 1
    grid_height, legend_height, title_height = rows * row_height, 0.5, 0.4
    height = grid_height + legend_height + title_height
    fig = plt.figure(figsize=(width + 0.4, height))
    ax = fig.add_axes((0, 0, 1, 1 - title_height / height))  # axes units are inches
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-grid_height - legend_height, 0)
    ax.axis("off")
    for x, row, cell_width, label, number, kind in placed:
        y = -row * row_height - 0.06
        reply = kind == "reply"
        ax.add_patch(Rectangle((x, y - 0.42), cell_width, 0.42, gid=kind, fc=CHAT_COLOURS.get(kind, "white"),
                               ec="#c62828" if reply else "#607d8b", ls="--" if reply else "-"))
        ax.text(x + pad, y - 0.15, label, va="center", family="monospace", fontsize=8, gid="label",
                color="#c62828" if reply else "black")
        ax.text(x + pad, y - 0.33, number, va="center", family="monospace", fontsize=6.5, color="#546e7a",
                gid="id")
    handles = [Rectangle((0, 0), 1, 1, fc=colour, ec="#607d8b", label=kind)
               for kind, colour in CHAT_COLOURS.items()]
    ax.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title(f"the chat as the model reads it: {len(ids)} tokens, each cell its text and its id", fontsize=10)
    return fig
