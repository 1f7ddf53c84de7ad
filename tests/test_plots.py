"""The notebooks' plots (helpers.figures): labelled axes, colorbars, log scales and whole token labels."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.figures import (  # noqa: E402
    draw_attention_heads,
    draw_logit_lens,
    draw_rope,
    draw_score_by_distance,
    draw_silu,
    draw_top_tokens,
)

LABELS = ["'<|begin_of_text|>'", "'the'", "' answer'", "' '"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def plots(fig):
    """The figure's axes that hold data, without its colorbars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]


def colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def assert_labelled(fig):
    for ax in plots(fig):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def tick_texts(axis):
    return [tick.get_text() for tick in axis.get_ticklabels()]


def test_rope_pairs_have_re_im_axes_numbered_points_and_the_legend_outside():
    angles = torch.arange(6.0)
    fig = draw_rope(torch.tensor([1.0, 0.1]), {"pair 0": torch.polar(torch.ones(6), angles)})
    assert_labelled(fig)
    right = fig.axes[1]
    assert right.get_xlabel().startswith("Re") and right.get_ylabel().startswith("Im")
    assert {text.get_text() for text in right.texts} == {str(m) for m in range(6)}  # 1 radian apart: all apart
    assert not any(line.get_linestyle() == "-" for line in right.lines if line.get_label() == "pair 0")
    fig.canvas.draw()
    legend, data = right.get_legend().get_window_extent(), right.get_window_extent()
    assert legend.x0 >= data.x1  # beside the data, not over it


def test_close_points_are_numbered_once():
    path = torch.polar(torch.ones(20), torch.arange(20) * 0.001)  # all but on top of each other
    fig = draw_rope(torch.tensor([0.001]), {"slow": path})
    assert [text.get_text() for text in fig.axes[1].texts] == ["0"]


def test_score_by_distance_is_a_curve_per_query_position():
    distances = range(5)
    fig = draw_score_by_distance(distances, {40: [0.1, 0.2, 0.3, 0.2, 0.1], 1000: [0.1, 0.2, 0.3, 0.2, 0.1]})
    assert_labelled(fig)
    curves = [line for line in fig.axes[0].lines if line.get_label().startswith("query at")]
    assert len(curves) == 2 and all(len(line.get_xdata()) == 5 for line in curves)


def test_head_grid_has_token_ticks_a_colorbar_and_gqa_groups():
    weights = torch.softmax(torch.randn(6, 4, 4), dim=-1)
    fig = draw_attention_heads(weights, LABELS, n_rep=3, title="layer 0")
    assert len(colorbars(fig)) == 1
    heads = plots(fig)
    assert len(heads) == 6
    assert tick_texts(heads[0].yaxis) == LABELS and tick_texts(heads[-1].xaxis) == LABELS
    assert [ax.get_title() for ax in heads[:4]] == [f"head {h} (k/v head {h // 3})" for h in range(4)]
    frame = [ax.spines["left"].get_edgecolor() for ax in heads]
    assert frame[0] == frame[2] != frame[3] == frame[5]  # one colour per key/value head
    # axis names on the outer edges: the bottom of each column, the left of each row
    assert [bool(ax.get_xlabel()) for ax in heads] == [False, False, True, True, True, True]
    assert [bool(ax.get_ylabel()) for ax in heads] == [True, False, False, False, True, False]


def test_silu_axes_are_labelled():
    assert_labelled(draw_silu(torch.linspace(-3, 3, 7)))


def test_top_tokens_on_a_log_scale():
    fig = draw_top_tokens(torch.tensor([0.99, 1e-3, 1e-5, 1e-6]), LABELS, "top 4")
    assert_labelled(fig)
    assert fig.axes[0].get_xscale() == "log"
    assert tick_texts(fig.axes[0].yaxis) == LABELS


def test_logit_lens_has_a_colorbar_and_whole_labels():
    guesses = [["' everything'", "'42'", "' '", "' universe'"]] * 3
    fig = draw_logit_lens(torch.rand(3, 4), guesses, LABELS, ["embeddings", "layer 0", "layer 1"])
    assert_labelled(fig)
    assert len(colorbars(fig)) == 1
    ax = plots(fig)[0]
    assert tick_texts(ax.xaxis) == LABELS
    assert [text.get_text() for text in ax.texts] == [g for row in guesses for g in row]
    assert min(text.get_fontsize() for text in ax.texts) >= 8
