"""Checks of notebooks 03 to 05 that let a slip through or could not name it: a size taken from the notebook's
`p` (the model it runs on) instead of from the tensors, and a width rounded to the nearest multiple. Each wrong
function is written the way a learner writes it; the reference and the solutions in solutions/ stay "correct"."""

import math

import pytest
import torch
from test_check import assert_named

from helpers import check
from helpers.check.swiglu import hidden_dim_reference
from helpers.params import SHAPES, params_from_dict

from conftest import load_script

TINY = check.tiny_model().params  # the notebook's `p` on the tiny model
EIGHT_B = params_from_dict(SHAPES["3-8b"].params)  # the notebook's `p` on Meta-Llama-3-8B


def solutions(name):
    return load_script(f"solutions/{name}.py")


def verdict(capsys, name, learner):
    getattr(check, name)(learner)
    return capsys.readouterr().out.rstrip("\n")


def weights_scaled_by(head_dim):
    """One head's weights, the scale written with the notebook's p.head_dim, as the cells above it do."""
    def weights(q, k):
        scores = q @ k.T / math.sqrt(head_dim)
        return scores.masked_fill(torch.ones(len(q), len(k), dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    return weights


def grouped_with_n_rep(n_rep):
    """Every head, each reading key/value head h // p.n_rep, as the notebook's loop over heads does."""
    def grouped(q, k, v):
        heads = []
        for h in range(q.shape[1]):
            kv = h // n_rep
            heads.append(weights_scaled_by(q.shape[-1])(q[:, h], k[:, kv]) @ v[:, kv])
        return torch.stack(heads, dim=1)
    return grouped


def head_queries_with_head_dim(head_dim):
    def head_queries(x, wq, n_heads, h):
        return x @ wq[h * head_dim:(h + 1) * head_dim].T
    return head_queries


def hidden_dim_rounded_to_nearest(dim, multiple_of, ffn_dim_multiplier):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return round(hidden / multiple_of) * multiple_of


# (check, the learner's wrong function, words its diagnosis must hold)
WRONG_ANSWERS = {
    "sqrt(p.head_dim) on the tiny model": ("attention_weights", weights_scaled_by(TINY.head_dim),
                                           "divided by sqrt(8), the square root of the head_dim of the tiny model"),
    "sqrt(p.head_dim) on the 8B": ("attention_weights", weights_scaled_by(EIGHT_B.head_dim),
                                   "divided by sqrt(128), the square root of the head_dim of Meta-Llama-3-8B"),
    "sqrt(p.dim) on the tiny model": ("attention_weights", weights_scaled_by(TINY.dim), "divided by sqrt(64)"),
    "h // p.n_rep": ("grouped_attention", grouped_with_n_rep(TINY.n_rep), "h // 4, with n_rep = 4, that of the tiny "
                     "model, Meta-Llama-3-8B"),
    "head rows cut with the tiny model's p.head_dim": ("head_queries", head_queries_with_head_dim(TINY.head_dim),
                                                       "head_dim = 8, the head_dim of the tiny model"),
    "head rows cut with the 8B's p.head_dim": ("head_queries", head_queries_with_head_dim(EIGHT_B.head_dim),
                                               "head_dim = 128, the head_dim of Meta-Llama-3-8B"),
    "round to the nearest multiple": ("hidden_dim", hidden_dim_rounded_to_nearest,
                                      "rounds to the nearest multiple of multiple_of; Meta's rule rounds up"),
}


@pytest.mark.parametrize("case", WRONG_ANSWERS)
def test_a_size_from_p_or_a_rounding_is_named(capsys, case):
    name, wrong, words = WRONG_ANSWERS[case]
    out = verdict(capsys, name, wrong)
    diagnosis = out.removeprefix("wrong: ")
    assert diagnosis in check.MISTAKES[name] and words in diagnosis, out


def test_rounding_to_the_nearest_multiple_is_wrong_on_llama_2_13b():
    """Every other case's width has a fraction above one half of multiple_of, where nearest and up agree."""
    assert hidden_dim_reference(5120, 256, None) == 13824
    assert hidden_dim_rounded_to_nearest(5120, 256, None) == 13568


def test_a_n_rep_that_would_raise_is_not_a_mistake():
    """Llama 3.2 3B's n_rep, 3, reads key/value head 2 of the tiny model's 2: the learner's function raises before
    it gives an output to compare, so no mistake of that n_rep is listed (the error is named as any index past
    k's heads is)."""
    assert not any("h // 3" in diagnosis for diagnosis in check.MISTAKES["grouped_attention"])


@pytest.mark.parametrize("name, diagnosis", [(name, d) for name in ("head_queries", "attention_weights",
                                                                     "grouped_attention", "hidden_dim")
                                             for d in check.MISTAKES[name]])
def test_each_mistake_of_these_checks_gets_its_own_diagnosis(capsys, name, diagnosis):
    assert_named(verdict(capsys, name, check.MISTAKES[name][diagnosis]), diagnosis)


@pytest.mark.parametrize("notebook, name, function", [
    ("03_qkv_rope", "head_queries", "my_head_queries"), ("03_qkv_rope", "rope", "my_rope_positions"),
    ("04_attention", "attention_weights", "my_attention_weights"),
    ("04_attention", "grouped_attention", "my_grouped_attention"),
    ("05_feed_forward", "hidden_dim", "my_hidden_dim"), ("05_feed_forward", "feed_forward", "my_feed_forward"),
])
def test_the_solutions_are_correct(capsys, notebook, name, function):
    assert verdict(capsys, name, getattr(solutions(notebook), function)) == "correct"


def test_the_references_are_correct(capsys):
    references = {"head_queries": check.qkv_rope.head_queries_reference, "rope": check.qkv_rope.rope_reference,
                  "attention_weights": check.attention.head_weights,
                  "grouped_attention": check.grouped_attention_reference, "hidden_dim": hidden_dim_reference,
                  "feed_forward": check.swiglu.transformer.feed_forward}
    for name, reference in references.items():
        assert verdict(capsys, name, reference) == "correct", name
