"""The data-flow diagram: its shapes come from the model's params, and the highlight lands on the named boxes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers import params_from_dict  # noqa: E402
from helpers.figures import HIGHLIGHT, draw_llama  # noqa: E402

LLAMA3_8B = dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256, multiple_of=1024,
                 ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0)
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
    fig = draw_llama(params_from_dict(SMALL))
    drawn = texts(fig)
    plt.close(fig)
    assert "(T, 48)" in drawn and "(T, 1000)" in drawn and "(T, 2×8)" in drawn and "n_layers = 3" in drawn
    assert "4096" not in drawn and "128256" not in drawn


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
