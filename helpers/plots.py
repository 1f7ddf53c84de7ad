"""Plots of the notebooks' numbers (RoPE's turns, attention weights, probabilities), whose labels the tests check.

Each function returns its matplotlib Figure; a notebook shows it with `plt.show()`.
"""

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

HIGHLIGHT = "#ffd54f"  # the "you are here" boxes, and what a plot points out


def draw_rope(theta, paths):
    """Left: θ_j per pair, log scale. Right: `paths` ({label: complex values by position}) as numbered points."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.semilogy(range(len(theta)), torch.as_tensor(theta).numpy(), "o-")
    left.set_xlabel("pair j")
    left.set_ylabel("θ_j (radians per position)")
    left.set_title("RoPE frequencies")
    radius = max(abs(path).max().item() for path in paths.values()) * 1.3
    for (label, path), marker in zip(paths.items(), "os^D", strict=False):
        path = torch.as_tensor(path).numpy()
        right.plot(path.real, path.imag, marker, ls="none", label=label)
        numbered = []  # positions whose number is drawn: those not too close to one already drawn
        for m, point in enumerate(path.tolist()):
            if all(abs(point - other) > 0.1 * radius for other in numbered):
                numbered.append(point)
                right.annotate(str(m), (point.real, point.imag), xytext=(1.13 * point.real, 1.13 * point.imag),
                               fontsize=7, ha="center", va="center")
    right.set_xlim(-radius, radius)
    right.set_ylim(-radius, radius)
    right.set_aspect("equal")
    right.axhline(0, color="grey", lw=0.5)
    right.axvline(0, color="grey", lw=0.5)
    right.set_xlabel("Re (first number of the pair)")
    right.set_ylabel("Im (second number of the pair)")
    right.set_title("one query pair placed at each position (numbers: position)")
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.tight_layout()
    return fig


def draw_score_by_distance(distances, scores):
    """The score q·k against the distance m − n, one curve per query position m in `scores` ({m: scores})."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for (m, values), (marker, size) in zip(scores.items(), [("o", 8), ("x", 7), (".", 5), ("+", 7)], strict=False):
        ax.plot(distances, values, marker=marker, ms=size, ls="-" if marker == "o" else "none",
                label=f"query at position {m}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("distance m − n (query position − key position)")
    ax.set_ylabel("score q·k after RoPE")
    ax.set_title("the same distance gives the same score, wherever the pair sits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_attention_heads(weights, labels, n_rep, title):
    """Every head's attention weights (n_heads, seq, seq), token ticks, one colorbar; heads framed by GQA group."""
    n_heads = len(weights)
    columns = n_heads if n_heads <= 4 else 4 if n_heads <= 8 else 8
    rows = -(-n_heads // columns)
    size = 0.16 * len(labels) + 1.0
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns + 1.2, size * rows + 0.6), squeeze=False)
    group_colours = plt.get_cmap("tab10")
    for h, ax in enumerate(axes.flat):
        if h >= n_heads:
            ax.axis("off")
            continue
        image = ax.imshow(torch.as_tensor(weights[h]).numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h} (k/v head {h // n_rep})", fontsize=8)
        bottom, left = h + columns >= n_heads, h % columns == 0  # token names on the outer edges only
        ax.set_xticks(range(len(labels)), labels if bottom else [], rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels if left else [], fontsize=6)
        ax.set_xlabel("key (attends to)" if bottom else "", fontsize=7)
        ax.set_ylabel("query (attends from)" if left else "", fontsize=7)
        for spine in ax.spines.values():
            spine.set_edgecolor(group_colours(h // n_rep % 10))
            spine.set_linewidth(3)
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.6)
    fig.suptitle(f"{title}: frame colour = the k/v head a group of {n_rep} query heads shares")
    return fig


def draw_silu(z):
    """SiLU(z) = z·σ(z) against ReLU and σ."""
    z = torch.as_tensor(z)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(z, z * torch.sigmoid(z), label="SiLU(z) = z·σ(z)")
    ax.plot(z, torch.relu(z), "--", label="ReLU(z)", alpha=0.6)
    ax.plot(z, torch.sigmoid(z), ":", label="σ(z)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("z (input to the gate)")
    ax.set_ylabel("output")
    ax.legend()
    ax.set_title("SiLU, the gate's non-linearity")
    fig.tight_layout()
    return fig


def draw_top_tokens(probs, labels, title):
    """Probabilities of the top candidates as horizontal bars on a log scale, best on top."""
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
    ax.barh(range(len(labels)), torch.as_tensor(probs).numpy())
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("probability (log scale)")
    ax.set_ylabel("candidate next token")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def draw_logit_lens(probs, guesses, token_labels, row_labels):
    """Each layer's (rows) top guess at each position (columns): its text, and its probability as colour."""
    width = max(0.8, 0.075 * max(len(label) for row in guesses for label in row))
    fig, ax = plt.subplots(figsize=(2.5 + width * len(token_labels), 1.8 + 0.45 * len(row_labels)))
    probs = torch.as_tensor(probs).numpy()
    image = ax.imshow(probs, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for row, row_guesses in enumerate(guesses):
        for col, guess in enumerate(row_guesses):
            ax.text(col, row, guess, ha="center", va="center", fontsize=8,
                    color="white" if probs[row, col] > 0.6 else "black")
    ax.set_xticks(range(len(token_labels)), token_labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xlabel("position: the token the guess follows")
    ax.set_ylabel("residual stream read after")
    fig.colorbar(image, ax=ax, label="probability of the top guess")
    ax.set_title("logit lens: top next token after each layer")
    fig.tight_layout()
    return fig


def draw_kv_cache(weights, labels, n_prompt):
    """The cache along the positions (prefill, then one row per decode step, the newest in yellow), and
    under it the newest query's attention `weights` over those positions as a 1×N heatmap."""
    n = len(labels)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.35 * n + 2), 4.4), sharex=True,
                                      layout="constrained")
    top.set_ylim(0, 2)
    top.set_yticks([0.5, 1.5], ["V", "K"])
    for position in range(n):
        step = "prefill" if position < n_prompt else "new" if position == n - 1 else "decode"
        colour = {"prefill": "#90caf9", "decode": "#a5d6a7", "new": HIGHLIGHT}[step]
        for row in (0, 1):
            top.add_patch(Rectangle((position - 0.45, row + 0.05), 0.9, 0.9, gid=step, fc=colour, ec="#607d8b"))
    top.set_title(f"KV cache: the prefill stores K and V of the {n_prompt} prompt positions at once (blue),\n"
                  "each decode step adds one position (green; this step's in yellow)", fontsize=9)
    top.set_ylabel("stored per layer")
    image = bottom.imshow(torch.as_tensor(weights).reshape(1, n).numpy(), cmap="viridis", vmin=0, aspect="auto")
    bottom.set_yticks([0], ["new query"])
    bottom.set_xticks(range(n), labels, rotation=90, fontsize=7)
    bottom.set_xlabel("key position (token)")
    bottom.set_ylabel("attends from")
    bottom.set_title("the new token's query against every stored key: one row of weights, 1 × N", fontsize=9)
    fig.colorbar(image, ax=[top, bottom], label="attention weight", shrink=0.8)
    return fig


def draw_top_k_top_p(probs, labels, top_k, top_p):
    """The most likely tokens' probabilities (sorted, most likely first) as bars with their running sum.
    Top-p keeps a token while those before it add up to less than p (blue bars; grey: cut); top-k keeps
    the k left of the dotted line."""
    probs = torch.as_tensor(probs)
    cumulative = torch.cumsum(probs, dim=0)
    kept = (cumulative - probs < top_p).tolist()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.5))
    bars = ax.bar(range(len(labels)), probs.numpy(), color=["C0" if keep else "lightgrey" for keep in kept])
    for bar, keep in zip(bars, kept, strict=True):
        bar.set_gid("kept" if keep else "cut")
    ax.plot(range(len(labels)), cumulative.numpy(), "o-", color="C1", ms=3, label="running sum of probabilities")
    ax.axhline(top_p, color="C3", ls="--", label=f"top-p: p = {top_p}")
    ax.axvline(top_k - 0.5, color="C2", ls=":", label=f"top-k: k = {top_k}")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("candidate next token, most likely first")
    ax.set_ylabel("probability")
    ax.set_title(f"top-p = {top_p} keeps {sum(kept)} of the {len(kept)} tokens shown (blue);"
                 f" top-k = {top_k} keeps {top_k}")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return fig
