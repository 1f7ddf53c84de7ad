"""The diagrams: their shapes come from the model's params, and the highlight lands where it belongs."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import Tokenizer, chat_tokens, params_from_dict  # noqa: E402
from helpers.figures import (  # noqa: E402
    CHAT_COLOURS,
    HIGHLIGHT,
    draw_attention_shapes,
    draw_chat_layout,
    draw_gqa,
    draw_kv_cache,
    draw_llama,
    draw_top_k_top_p,
)
from helpers.params import LLAMA3_8B_PARAMS as LLAMA3_8B  # noqa: E402

SMALL = dict(dim=48, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=1000, multiple_of=16, norm_eps=1e-5,
             rope_theta=10000.0)


def texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def highlighted(fig):
    return {patch.get_gid() for ax in fig.axes for patch in ax.patches
            if matplotlib.colors.same_color(patch.get_facecolor(), HIGHLIGHT)}


def test_the_8b_shapes_are_drawn():
    fig = draw_llama(params_from_dict(LLAMA3_8B))
    drawn = texts(fig)
    plt.close(fig)
    for shape in ["(T, 4096)", "(T, 14336)", "(T, 128256)", "(T, 32×128)", "(T, 8×128)", "(32, T, T)",
                  "n_layers = 32", "4 query heads per k/v head", "√128"]:
        assert shape in drawn


def test_other_params_other_shapes():
    fig = draw_llama(params_from_dict(SMALL), beside=None)
    drawn = texts(fig)
    plt.close(fig)
    assert "(T, 48)" in drawn and "(T, 1000)" in drawn and "(T, 2×8)" in drawn and "n_layers = 3" in drawn
    assert "4096" not in drawn and "128256" not in drawn


def texts_of_box(fig, name):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == name]


def test_the_8b_shapes_are_drawn_beside_a_small_model():
    fig = draw_llama(params_from_dict(SMALL))
    ffn, scores = texts_of_box(fig, "ffn"), texts_of_box(fig, "scores")
    drawn = texts(fig)
    plt.close(fig)
    # Each box: its label, this model's shapes, the 8B's shapes.
    assert ffn[1:] == ["(T, 48) → (T, 128) → (T, 48)", "(T, 4096) → (T, 14336) → (T, 4096)"]
    assert scores[1:] == ["3 query heads per k/v head, √8: (6, T, T)", "4 query heads per k/v head, √128: (32, T, T)"]
    assert "Meta-Llama-3-8B (32 layers)" in drawn and "n_layers = 3" in drawn


def test_no_second_column_for_the_8b_itself():
    fig = draw_llama(params_from_dict(LLAMA3_8B))
    assert len(texts_of_box(fig, "ffn")) == 2 and "Meta-Llama-3-8B (32 layers)" not in texts(fig)
    plt.close(fig)


@pytest.mark.parametrize("highlight, expected", [(None, set()), ("ffn", {"ffn"}),
                                                 (["qkv", "rope"], {"qkv", "rope"})])
def test_the_highlight_lands_on_the_named_boxes(highlight, expected):
    fig = draw_llama(params_from_dict(SMALL), highlight)
    assert highlighted(fig) == expected
    assert texts(fig).count("here") == len(expected)
    plt.close(fig)


def test_an_unknown_box_is_an_error():
    with pytest.raises(ValueError, match="no box named"):
        draw_llama(params_from_dict(SMALL), "attn")


def gids(fig, kind):
    return [patch.get_gid() for ax in fig.axes for patch in ax.patches if isinstance(patch, kind)]


@pytest.mark.parametrize("params, kv_head, group", [(SMALL, 1, {"kv1", "q3", "q4", "q5"}),
                                                    (LLAMA3_8B, 7, {"kv7", "q28", "q29", "q30", "q31"})])
def test_gqa_joins_each_query_head_to_its_key_value_head(params, kv_head, group):
    p = params_from_dict(params)
    fig = draw_gqa(p, kv_head)
    boxes = gids(fig, matplotlib.patches.Rectangle)
    assert sorted(boxes) == sorted([f"q{h}" for h in range(p.n_heads)] + [f"kv{kv}" for kv in range(p.n_kv_heads)])
    assert highlighted(fig) == group
    ax = fig.axes[0]
    assert len(ax.lines) == p.n_heads  # one line per query head, ending over its key/value head's box
    kv_box = {patch.get_gid(): patch for patch in ax.patches}[f"kv{kv_head}"]
    first = ax.lines[min(int(g[1:]) for g in group if g.startswith("q"))]
    assert kv_box.get_x() < first.get_xdata()[1] < kv_box.get_x() + kv_box.get_width()
    assert f"query head h reads key/value head h // {p.n_rep}" in ax.get_title()
    plt.close(fig)


def test_kv_cache_prefill_decode_and_the_new_row():
    labels = [f"'t{i}'" for i in range(7)]
    fig = draw_kv_cache(torch.softmax(torch.randn(7), dim=0), labels, n_prompt=4)
    cache, row = fig.axes[0], fig.axes[1]
    steps = [patch.get_gid() for patch in cache.patches]
    assert steps == ["prefill"] * 8 + ["decode"] * 4 + ["new"] * 2  # a K and a V cell per position
    assert highlighted(fig) == {"new"}
    assert [patch.get_x() for patch in cache.patches if patch.get_gid() == "new"] == [6 - 0.45] * 2
    assert row.images[0].get_array().shape == (1, 7)
    assert [tick.get_text() for tick in row.get_xticklabels()] == labels
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    plt.close(fig)


@pytest.mark.parametrize("n_prompt, n_decode", [(17, 4), (5, 9), (17, 1)])
def test_kv_cache_draws_the_green_decode_steps_its_title_names(n_prompt, n_decode):
    n = n_prompt + n_decode
    fig = draw_kv_cache(torch.softmax(torch.randn(n), dim=0), [f"'t{i}'" for i in range(n)], n_prompt)
    cache = fig.axes[0]
    green = [patch for patch in cache.patches if patch.get_gid() == "decode"]
    assert len(green) == 2 * (n_decode - 1)  # a K and a V cell per earlier decode step
    assert all(matplotlib.colors.same_color(patch.get_facecolor(), "#a5d6a7") for patch in green)
    assert sorted({patch.get_x() + 0.45 for patch in green}) == pytest.approx(range(n_prompt, n - 1))
    title = cache.get_title()
    assert f"the {n_prompt} prompt positions" in title
    if n_decode > 1:
        assert f"{n_decode - 1} earlier step{'s' if n_decode > 2 else ''} in green" in title
    else:  # a title must not promise what is not drawn
        assert "green" not in title
    plt.close(fig)


def test_top_p_keeps_until_the_running_sum_reaches_p():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.05, 0.05])
    fig = draw_top_k_top_p(probs, list("abcde"), top_k=2, top_p=0.75)
    ax = fig.axes[0]
    assert [patch.get_gid() for patch in ax.patches] == ["kept"] * 3 + ["cut"] * 2  # 0.4 + 0.3 < 0.75
    running, p_line, k_line = ax.lines
    assert running.get_ydata() == pytest.approx([0.4, 0.7, 0.9, 0.95, 1.0])
    assert list(p_line.get_ydata()) == [0.75, 0.75] and list(k_line.get_xdata()) == [1.5, 1.5]
    assert ax.get_xlabel() and ax.get_ylabel()
    plt.close(fig)


def box_texts(fig):
    """Each box's gid -> the texts drawn in it."""
    boxes = {}
    for text in fig.axes[0].texts:
        if text.get_gid():
            boxes.setdefault(text.get_gid(), []).append(text.get_text())
    return {gid: " ".join(lines) for gid, lines in boxes.items()}


@pytest.mark.parametrize("params, n_tokens, expected", [
    (LLAMA3_8B, 17, {"x": "(17, 4096)", "q": "(17, 32, 128)", "k": "(17, 8, 128)", "k_rep": "(17, 32, 128)",
                     "scores": "(32, 17, 17)", "heads": "(17, 32, 128)", "joined": "(17, 4096)", "out": "(17, 4096)"}),
    (SMALL, 5, {"x": "(5, 48)", "q": "(5, 6, 8)", "v": "(5, 2, 8)", "v_rep": "(5, 6, 8)",
                "weights": "(6, 5, 5)", "joined": "(5, 48)", "out": "(5, 48)"}),
])
def test_attention_shapes_come_from_params_and_the_prompt(params, n_tokens, expected):
    p = params_from_dict(params)
    fig = draw_attention_shapes(p, n_tokens)
    boxes, drawn = box_texts(fig), texts(fig)
    assert set(boxes) == set(gids(fig, matplotlib.patches.FancyBboxPatch))  # each box's text carries its gid
    for gid, shape in expected.items():
        assert shape in boxes[gid], gid
    assert f"√{p.head_dim}" in drawn and f"×{p.n_rep}" in drawn and "causal mask" in drawn and "softmax" in drawn
    assert "(T, n_kv_heads, head_dim)" in boxes["k"] and "(n_heads, T, T)" in boxes["scores"]
    assert len(fig.axes[0].texts) > 2 * len(boxes)  # the arrows' operations too
    plt.close(fig)


def test_chat_layout_colours_each_kind_and_shows_every_label_whole():
    tokenizer = Tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "大型语言模型 🦙?"}]
    ids = chat_tokens(tokenizer, messages)
    fig = draw_chat_layout(tokenizer, ids)
    ax = fig.axes[0]
    cells = list(ax.patches)
    kinds = [cell.get_gid() for cell in cells]
    special = set(tokenizer.special_ids.values())
    assert [kind == "special token" for kind in kinds[:-1]] == [i in special for i in ids]
    assert kinds[2] == "role" and kinds[4] == "blank line closing a header" and kinds[5] == "message text"
    assert kinds[-5:] == ["special token", "role", "special token", "blank line closing a header", "reply"]
    for cell, kind in zip(cells, kinds, strict=True):
        assert matplotlib.colors.same_color(cell.get_facecolor(), CHAT_COLOURS.get(kind, "white"))
    assert len(set(CHAT_COLOURS.values())) == len(CHAT_COLOURS)
    labels = [text for text in ax.texts if text.get_gid() == "label"]
    assert [text.get_text() for text in labels[:-1]] == tokenizer.labels(ids)
    assert labels[-1].get_text() == "the model writes from here"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for cell, label in zip(cells, labels, strict=True):  # every label whole, inside its own cell
        outer, inner = cell.get_window_extent(renderer), label.get_window_extent(renderer)
        assert outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1
    assert fig.bbox.contains(*cells[-1].get_window_extent(renderer).max)
    assert [handle.get_text() for handle in ax.get_legend().get_texts()] == list(CHAT_COLOURS)
    plt.close(fig)


def test_a_closed_chat_has_no_reply_cell():
    tokenizer = Tokenizer()
    ids = chat_tokens(tokenizer, [{"role": "user", "content": "Hi"}], add_assistant_header=False)
    fig = draw_chat_layout(tokenizer, ids)
    assert "reply" not in gids(fig, matplotlib.patches.Rectangle)
    plt.close(fig)


@pytest.mark.parametrize("head_dim", [8, 16])
def test_the_rope_pairs_diagram_colours_each_pair_alike_in_both_layouts(head_dim):
    from matplotlib.patches import Rectangle

    from helpers.figures import draw_rope_pairs

    fig = draw_rope_pairs(head_dim)
    boxes = sorted((p for p in fig.axes[0].patches if isinstance(p, Rectangle)), key=lambda p: (-p.get_y(), p.get_x()))
    meta, hf = [b.get_facecolor() for b in boxes[:head_dim]], [b.get_facecolor() for b in boxes[head_dim:]]
    half = head_dim // 2
    assert all(meta[2 * j] == meta[2 * j + 1] for j in range(half))  # adjacent numbers pair up
    assert all(hf[j] == hf[j + half] for j in range(half))  # numbers half a head apart pair up
    assert len({*meta}) == half
    plt.close(fig)
