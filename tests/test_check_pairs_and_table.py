"""Notebook 01's most_frequent_pair check settles ties by first sight; notebook 02's embeddings check finds a
whole-table conversion, copy or product that gives the right values."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from helpers import check
from helpers.check.embeddings_rmsnorm import CONVERTS_TABLE, COPIES_TABLE, MULTIPLIES_TABLE

from conftest import load_script


def solution(file, name):
    return getattr(load_script(f"solutions/{file}.py"), name)


def printed(capsys, name, learner):
    getattr(check, name)(learner)
    return capsys.readouterr().out


# ---- most_frequent_pair: ties -------------------------------------------------------------------------------

def pair_from_a_set(ids):
    """Used to print "correct": in both old tie cases the pair seen first also came first in the set."""
    pairs = list(zip(ids, ids[1:], strict=False))
    return max(set(pairs), key=pairs.count)


def pair_with_smallest_ids(ids):
    counts = Counter(zip(ids, ids[1:], strict=False))
    return min(counts, key=lambda pair: (-counts[pair], pair))


def test_ties_broken_by_a_set_are_named(capsys):
    out = printed(capsys, "most_frequent_pair", pair_from_a_set)
    assert out.startswith("wrong: of equally frequent pairs it picks the one a set gives first"), out


def test_ties_broken_by_the_smallest_ids_are_named(capsys):
    out = printed(capsys, "most_frequent_pair", pair_with_smallest_ids)
    assert out == ("wrong: of equally frequent pairs it picks the one with the smallest ids (sorted order); the "
                   "rule is the first seen\n")


@pytest.mark.parametrize("learner", [
    solution("01_tokenizer", "my_most_frequent_pair"),
    check.tokenizer.most_frequent_pair_reference,
    lambda ids: max(Counter(zip(ids, ids[1:], strict=False)).items(), key=lambda kv: kv[1])[0],
    lambda ids: sorted(Counter(zip(ids, ids[1:], strict=False)).items(), key=lambda kv: kv[1], reverse=True)[0][0],
])
def test_first_seen_among_ties_is_correct(capsys, learner):
    assert printed(capsys, "most_frequent_pair", learner) == "correct\n"


def test_the_new_tie_cases_are_ties_with_first_seen_answers():
    assert check.tokenizer.most_frequent_pair_reference([9, 7, 9, 7, 5, 5, 5]) == (9, 7)
    assert check.tokenizer.most_frequent_pair_reference([1, 2, 3, 1, 2, 3]) == (1, 2)


# ---- embeddings: the whole table ----------------------------------------------------------------------------

def one_hot(table, tokens):
    return F.one_hot(tokens, len(table))


def filled_layer(table, tokens):
    """The usual tutorial code: a float32 nn.Embedding, filled with the table."""
    layer = torch.nn.Embedding(*table.shape)
    layer.weight.data.copy_(table)
    return layer(tokens).detach()


def state_dict_layer(table, tokens):
    layer = torch.nn.Embedding(*table.shape)
    layer.load_state_dict({"weight": table})
    return layer(tokens).detach()


# Each of these printed "correct" before: its values are right.
WHOLE_TABLE = {
    "table.float()[tokens]": (lambda table, tokens: table.float()[tokens], CONVERTS_TABLE),
    "table.to(float32)[tokens]": (lambda table, tokens: table.to(torch.float32)[tokens], CONVERTS_TABLE),
    "F.embedding on table.float()": (lambda table, tokens: F.embedding(tokens, table.float()), CONVERTS_TABLE),
    "one-hot float32 product": (lambda table, tokens: one_hot(table, tokens).float() @ table.float(), CONVERTS_TABLE),
    "float32 nn.Embedding copy_": (filled_layer, CONVERTS_TABLE),
    "float32 nn.Embedding load_state_dict": (state_dict_layer, CONVERTS_TABLE),
    "clone": (lambda table, tokens: table.clone()[tokens].float(), COPIES_TABLE),
    "one-hot bf16 product": (lambda table, tokens: (one_hot(table, tokens).to(table.dtype) @ table).float(),
                             MULTIPLIES_TABLE),
    "F.linear with table.T": (lambda table, tokens: F.linear(one_hot(table, tokens).to(table.dtype), table.T).float(),
                              MULTIPLIES_TABLE),
    "einsum": (lambda table, tokens: torch.einsum("tv,vd->td", one_hot(table, tokens).to(table.dtype), table).float(),
               MULTIPLIES_TABLE),
}


@pytest.mark.parametrize("name", WHOLE_TABLE)
def test_right_values_from_the_whole_table_are_wrong(capsys, name):
    learner, diagnosis = WHOLE_TABLE[name]
    assert printed(capsys, "embeddings", learner) == f"wrong: {diagnosis}\n"


def test_the_conversion_message_says_what_to_do_and_what_it_costs_on_the_8b():
    assert "index the rows first, then convert only them" in CONVERTS_TABLE
    assert "2.1 GB" in CONVERTS_TABLE  # 128,256 x 4,096 float32 numbers


@pytest.mark.parametrize("learner", [
    solution("02_embeddings_rmsnorm", "my_embeddings"),
    lambda table, tokens: table[tokens].float(),
    lambda table, tokens: table[tokens].to(torch.float32),
    lambda table, tokens: F.embedding(tokens, table).float(),
    lambda table, tokens: torch.index_select(table, 0, tokens).float(),
    lambda table, tokens: torch.nn.Embedding.from_pretrained(table)(tokens).float(),
    lambda table, tokens: table.detach().contiguous().T.T[tokens].float(),  # views of the table copy nothing
    lambda table, tokens: torch.stack([table[int(t)] for t in tokens]).float(),
])
def test_indexing_first_is_correct(capsys, learner):
    assert printed(capsys, "embeddings", learner) == "correct\n"


def test_wrong_values_are_named_before_the_whole_table(capsys):
    """Positions instead of token ids, from a float32 copy: the values' mistake comes first."""
    out = printed(capsys, "embeddings", lambda table, tokens: table.float()[: len(tokens)])
    assert out == "wrong: it takes the rows of the positions 0, 1, 2, ..., not of the token ids\n"


def test_the_watch_is_gone_after_the_check(capsys):
    printed(capsys, "embeddings", lambda table, tokens: table.float()[tokens])
    assert not torch.overrides._is_torch_function_mode_enabled()
