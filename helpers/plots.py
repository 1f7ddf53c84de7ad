"""Plots of the notebooks' numbers (RoPE's turns, attention weights, probabilities), whose labels the tests check.

Each function returns its matplotlib Figure; a notebook shows it with `plt.show()`.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

HIGHLIGHT = "#ffd54f"  # the "you are here" boxes, and what a plot points out


def draw_rms_norm(lengths, labels, g, g_name="g"):
    """Each token's vector length (L2 norm) at each stage of RMSNorm, `lengths` ({title: (seq,) lengths},
    the embeddings first), as bars; under them the gain `g`, one factor per dimension. The first panel has
    its own x scale, said in its label; the others mark √dim, the length of a vector whose RMS is 1."""
    g = torch.as_tensor(g).float()
    dim, root = len(g), len(g) ** 0.5
    fig = plt.figure(figsize=(14, 0.22 * len(labels) + 5.0), layout="constrained")
    grid = fig.add_gridspec(2, len(lengths), height_ratios=[0.22 * len(labels) + 1.0, 2.2])
    bars = [fig.add_subplot(grid[0, 0])]
    bars += [fig.add_subplot(grid[0, i], sharey=bars[0]) for i in range(1, len(lengths))]
    for i, (ax, (title, values)) in enumerate(zip(bars, lengths.items(), strict=True)):
        values = torch.as_tensor(values).float()
        ax.barh(range(len(labels)), values.numpy())
        ax.set_title(title)
        if i == 0:
            ratio = root / values.mean().item()
            relation = f"{ratio:.3g}× shorter" if ratio >= 1 else f"{1 / ratio:.3g}× longer"
            ax.set_xlabel(f"L2 norm, on its own scale: {relation} on average\n"
                          f"than √dim = {root:.3g}, the length after dividing by the RMS")
        else:
            ax.axvline(root, color="grey", ls="--", lw=1)
            ax.set_xlabel(f"L2 norm (dashed: √dim = {root:.3g})")
            ax.tick_params(labelleft=False)
    bars[0].set_yticks(range(len(labels)), labels)
    bars[0].invert_yaxis()
    bars[0].set_ylabel("token")
    gain = fig.add_subplot(grid[1, :])
    gain.vlines(range(dim), 0, g.numpy(), lw=max(0.3, min(3.0, 600 / dim)))
    gain.axhline(1, color="grey", ls="--", lw=1)
    gain.set_xlim(-0.5, dim - 0.5)
    gain.set_ylim(min(0.0, g.min().item() * 1.1), max(1.0, g.max().item()) * 1.1)
    gain.xaxis.set_major_locator(MaxNLocator(integer=True))
    gain.set_xlabel(f"dimension i (0 to {dim - 1})")
    gain.set_ylabel("g_i")
    gain.set_title(f"the gain {g_name}: one factor per dimension, the same for every token (dashed: 1, "
                   "which leaves a dimension as it is)")
    return fig


def numbered_positions(n, first=4):
    """The positions whose number draw_rope writes: the first few, which show the step, and the last."""
    return [m for m in range(n) if m < first or m == n - 1]


def draw_rope(theta, paths):
    """Left: θ_j per pair, log scale. Right: `paths` ({label: complex values by position}) as points, the
    first positions and the last numbered (numbered_positions)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.semilogy(range(len(theta)), torch.as_tensor(theta).numpy(), "o-")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("pair j")
    left.set_ylabel("θ_j (radians per position)")
    left.set_title("RoPE frequencies")
    radius = max(abs(path).max().item() for path in paths.values()) * 1.3
    for (label, path), marker in zip(paths.items(), "os^D", strict=False):
        path = torch.as_tensor(path).numpy()
        right.plot(path.real, path.imag, marker, ls="none", label=label)
        numbered = []  # points whose number is drawn: a point too close to one already numbered is not
        for m in numbered_positions(len(path)):
            point = complex(path[m])
            if all(abs(point - other) > 0.1 * radius for other in numbered):
                numbered.append(point)
                right.annotate(str(m), (point.real, point.imag), xytext=(1.13 * point.real, 1.13 * point.imag),
                               fontsize=8, ha="center", va="center")
    right.set_xlim(-radius, radius)
    right.set_ylim(-radius, radius)
    right.set_aspect("equal")
    right.axhline(0, color="grey", lw=0.5)
    right.axvline(0, color="grey", lw=0.5)
    right.set_xlabel("Re (first number of the pair)")
    right.set_ylabel("Im (second number of the pair)")
    right.set_title("one query pair placed at each position\n(numbers: the first positions and the last)")
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("distance m − n (query position − key position)")
    ax.set_ylabel("score q·k after RoPE")
    ax.set_title("the same distance gives the same score, wherever the pair sits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_attention_heads(weights, labels, n_rep, title):
    """Every head's attention weights (n_heads, seq, seq), token ticks, one colorbar; heads framed by GQA group."""
    n_heads = len(weights)
    # up to 8 a row; beyond 8 heads, whole groups of n_rep a row (9 heads of groups of 3: rows of 6)
    columns = n_heads if n_heads <= 4 else 4 if n_heads <= 8 else n_rep * max(1, 8 // n_rep)
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
    """The cache along the positions (the `n_prompt` of the prefill in blue, then one per decode step in
    green, the newest in yellow), and under it the newest query's attention `weights` over them, 1×N."""
    n = len(labels)
    n_decode = n - n_prompt - 1  # the decode steps before the newest
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.35 * n + 2), 4.4), sharex=True,
                                      layout="constrained")
    top.set_ylim(0, 2)
    top.set_yticks([0.5, 1.5], ["V", "K"])
    for position in range(n):
        step = "prefill" if position < n_prompt else "new" if position == n - 1 else "decode"
        colour = {"prefill": "#90caf9", "decode": "#a5d6a7", "new": HIGHLIGHT}[step]
        for row in (0, 1):
            top.add_patch(Rectangle((position - 0.45, row + 0.05), 0.9, 0.9, gid=step, fc=colour, ec="#607d8b"))
    earlier = f"{n_decode} earlier step{'s' if n_decode != 1 else ''} in green, " if n_decode > 0 else ""
    top.set_title(f"KV cache: the prefill stores K and V of the {n_prompt} prompt positions at once (blue),\n"
                  f"each decode step adds one position ({earlier}this step's in yellow)", fontsize=9)
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


def draw_int8_errors(sizes, mean_errors, per_row, per_group, group_size, title):
    """Left: the mean relative error of a row against the group size (`sizes`, `mean_errors` as fractions),
    from 0. Right: histograms of each row's relative error, one scale per row and per `group_size`,
    on the same bins so that their bars line up."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(sizes, [100 * e for e in mean_errors], marker="o")
    left.set_xscale("log", base=2)
    left.set_xticks(sizes, [str(size) for size in sizes])
    left.minorticks_off()
    left.set_ylim(0, 1.1 * 100 * max(mean_errors))
    left.set_xlabel("group size (numbers sharing one scale; the last is the whole row)")
    left.set_ylabel("mean relative RMS error of a row (%)")
    left.set_title(title)
    per_row, per_group = (100 * torch.as_tensor(e).float().numpy() for e in (per_row, per_group))
    bins = np.histogram_bin_edges(np.concatenate([per_row, per_group]), bins="auto")
    right.hist(per_row, bins=bins, alpha=0.6, label="one scale per row")
    right.hist(per_group, bins=bins, alpha=0.6, label=f"one scale per {group_size} numbers")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("relative RMS error of a row (%)")
    right.set_ylabel("rows")
    right.legend()
    right.set_title("each row's error, both on the same bins")
    fig.tight_layout()
    return fig
