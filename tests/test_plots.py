"""The notebooks' plots (helpers.figures): labelled axes, colorbars, log scales and whole token labels."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.figures import (  # noqa: E402
    draw_attention_heads,
    draw_int8_errors,
    draw_logit_lens,
    draw_rms_norm,
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
    assert [text.get_text() for text in right.texts] == ["0", "1", "2", "3", "5"]  # the first four and the last
    assert not any(line.get_linestyle() == "-" for line in right.lines if line.get_label() == "pair 0")
    fig.canvas.draw()
    legend, data = right.get_legend().get_window_extent(), right.get_window_extent()
    assert legend.x0 >= data.x1  # beside the data, not over it


def test_close_points_are_numbered_once():
    path = torch.polar(torch.ones(20), torch.arange(20) * 0.001)  # all but on top of each other
    fig = draw_rope(torch.tensor([0.001]), {"slow": path})
    assert [text.get_text() for text in fig.axes[1].texts] == ["0"]


def integer_ticks(axis):
    ticks = [t for t in axis.get_majorticklocs() if axis.get_view_interval()[0] <= t <= axis.get_view_interval()[1]]
    return ticks and all(float(t).is_integer() for t in ticks)


def test_rope_pairs_have_integer_ticks_and_few_numbers_whatever_the_length():
    n_pairs, n_positions = 3, 40  # 3 pairs would get ticks at 0.5 steps; 40 positions would crowd the circle
    theta = 10.0 ** -torch.arange(float(n_pairs))
    angles = torch.arange(float(n_positions))  # 1 radian a step: position 39 lands between 1 and 2
    fig = draw_rope(theta, {"fast": torch.polar(torch.ones(n_positions), angles)})
    fig.canvas.draw()
    assert integer_ticks(fig.axes[0].xaxis)
    assert [text.get_text() for text in fig.axes[1].texts] == ["0", "1", "2", "3", str(n_positions - 1)]


def test_score_by_distance_is_a_curve_per_query_position():
    distances = range(5)
    fig = draw_score_by_distance(distances, {40: [0.1, 0.2, 0.3, 0.2, 0.1], 1000: [0.1, 0.2, 0.3, 0.2, 0.1]})
    assert_labelled(fig)
    curves = [line for line in fig.axes[0].lines if line.get_label().startswith("query at")]
    assert len(curves) == 2 and all(len(line.get_xdata()) == 5 for line in curves)
    fig.canvas.draw()
    assert integer_ticks(fig.axes[0].xaxis)


def test_rms_norm_shows_the_gain_per_dimension_and_says_the_first_panel_has_its_own_scale():
    dim, labels = 48, LABELS  # not the tiny model's 64: every size comes from the tensors
    g = torch.linspace(0.5, 1.5, dim)
    lengths = {"embedding x": torch.full((4,), 0.4), "x / RMS(x)": torch.full((4,), dim ** 0.5),
               "x / RMS(x) * g": torch.full((4,), 7.0)}
    fig = draw_rms_norm(lengths, labels, g, g_name="layers.0.attention_norm.weight")
    *bars, gain = plots(fig)
    assert all(ax.get_xlabel() for ax in bars) and bars[0].get_ylabel() and gain.get_ylabel()  # tokens: shared
    assert [ax.get_title() for ax in bars] == list(lengths)
    assert tick_texts(bars[0].yaxis) == labels
    assert "own scale" in bars[0].get_xlabel() and f"{dim ** 0.5 / 0.4:.3g}× shorter" in bars[0].get_xlabel()
    for ax in bars[1:]:  # √dim, the length after dividing by the RMS, marked
        assert [line.get_xdata()[0] for line in ax.lines] == [pytest.approx(dim ** 0.5)]
    assert "attention_norm.weight" in gain.get_title()
    (stems,) = gain.collections  # one line per dimension, from 0 up to g_i
    segments = stems.get_segments()
    assert len(segments) == dim and [s[1][1] for s in segments] == pytest.approx(g.tolist())
    assert gain.get_ylim()[0] == 0 and gain.get_xlim() == (-0.5, dim - 0.5)


def test_int8_errors_start_at_zero_and_the_histograms_share_their_bins():
    sizes, mean_errors = [8, 16, 32, 64, 128], [0.0040, 0.0045, 0.0050, 0.0052, 0.0055]
    generator = torch.Generator().manual_seed(0)
    per_row = 0.005 + 0.002 * torch.rand(500, generator=generator)
    per_group = 0.003 + 0.004 * torch.rand(500, generator=generator)  # another range than per_row's
    fig = draw_int8_errors(sizes, mean_errors, per_row, per_group, 32, title="wq")
    assert_labelled(fig)
    left, right = fig.axes
    assert left.get_ylim()[0] == 0 and left.get_ylim()[1] >= 100 * max(mean_errors)
    assert left.get_xticks().tolist() == sizes
    bars = right.patches
    first, second = bars[:len(bars) // 2], bars[len(bars) // 2:]
    assert [b.get_x() for b in first] == [b.get_x() for b in second]  # the same bins, bar by bar
    assert [b.get_width() for b in first] == pytest.approx([b.get_width() for b in second])
    assert sum(b.get_height() for b in first) == len(per_row) and sum(b.get_height() for b in second) == 500
    assert right.get_ylim()[0] == 0
    assert [text.get_text() for text in right.get_legend().get_texts()] == ["one scale per row",
                                                                            "one scale per 32 numbers"]


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
