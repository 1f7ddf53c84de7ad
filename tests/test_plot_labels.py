"""Token labels in plots: every character drawable by matplotlib's default font, so no glyph warnings."""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from helpers import Tokenizer  # noqa: E402

# Chinese, Devanagari, an emoji split across tokens, a quote, and plain English.
TEXT = "大型语言模型 नमस्ते दुनिया 🦙 it's the"


def draw(labels):
    fig, ax = plt.subplots()
    ax.barh(range(len(labels)), range(len(labels)))
    ax.set_yticks(range(len(labels)), labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    plt.close(fig)
    return [str(w.message) for w in caught]


def test_labels_draw_without_missing_glyphs():
    tokenizer = Tokenizer()
    ids = tokenizer.encode(TEXT, bos=False)
    labels = tokenizer.labels(ids)
    assert all(label.isascii() for label in labels)
    assert labels[-3:] == [repr(" it"), repr("'s"), repr(" the")]  # ASCII tokens read as repr shows them
    assert draw(labels) == []


def test_the_raw_pieces_would_warn():
    """The check has teeth: the same tokens as plain text miss glyphs in the default font."""
    tokenizer = Tokenizer()
    pieces = [repr(piece) for piece in tokenizer.pieces(tokenizer.encode(TEXT, bos=False))]
    assert any("missing from font" in message for message in draw(pieces))
