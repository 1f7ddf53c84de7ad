"""Notebook 07's KV-cache check sees a cache that is not preallocated, the harness hints at
bfloat16 and wants ints where helpers gives ints, the tokenizer stops at <|eom_id|>, and notebooks 06 and 07
compute RoPE with the model's whole scaling."""

import importlib
import json
from pathlib import Path

import pytest
import torch

import helpers
from helpers import LayerCache, check, model_frequencies, params_from_dict, rope_frequencies
from helpers.check import harness
from helpers.tokenizer import SPLIT_PATTERN, Tokenizer
from helpers.tokenizer_json import tokenizer_json

from conftest import load_script

REPO = Path(helpers.__file__).resolve().parent.parent


def printed(capsys, name, learner):
    getattr(check, name)(learner)
    return capsys.readouterr().out


# --- check.kv_cache: a preallocated cache stores into the buffers __init__ allocated ----------------------------

class Concatenates:
    """Right keys and values, but no preallocation: every update makes new tensors."""

    def __init__(self, capacity, n_kv_heads, head_dim):
        self.keys = torch.zeros(capacity, n_kv_heads, head_dim)
        self.values = torch.zeros(capacity, n_kv_heads, head_dim)
        self.length = 0

    def update(self, k, v):
        self.keys = torch.cat([self.keys[: self.length], k])
        self.values = torch.cat([self.values[: self.length], v])
        self.length += len(k)
        return self.keys, self.values


class ReturnsCopies(LayerCache):
    """Writes into its buffers, but hands back copies of them."""

    def update(self, k, v):
        keys, values = super().update(k, v)
        return keys.clone(), values.clone()


class ConcatenatesValuesOnly(LayerCache):
    def update(self, k, v):
        end = self.length + len(k)
        self.keys[self.length : end] = k
        self.values = torch.cat([self.values[: self.length], v])
        self.length = end
        return self.keys[:end], self.values


class RewritesStored(LayerCache):
    """Writes into its buffers and returns views of them, but writes every stored position again each step."""

    def update(self, k, v):
        end = self.length + len(k)
        self.keys[:end] = torch.cat([self.keys[: self.length], k])
        self.values[:end] = torch.cat([self.values[: self.length], v])
        self.length = end
        return self.keys[:end], self.values[:end]


class ConvertsTheNewRows(LayerCache):
    """Copies the new rows on their way in (a clone, a contiguous copy): still only them."""

    def update(self, k, v):
        return super().update(k.clone().contiguous().to(torch.float32), v.clone())


def test_a_cache_that_writes_its_stored_positions_again_is_told_so(capsys):
    out = printed(capsys, "kv_cache", RewritesStored)
    # step 1 of the tiny model's 17 positions: 15 stored, 1 new; the cat's result and the copy into the buffer
    assert out.startswith("wrong: update writes 32 positions' keys and values in a step that adds 1: it writes "
                          "the 15 already stored again"), out
    assert "self.keys[self.length : end] = k" in out


def test_a_cache_that_copies_only_its_new_rows_is_correct(capsys):
    assert printed(capsys, "kv_cache", ConvertsTheNewRows) == "correct\n"


def test_a_cache_that_concatenates_is_told_it_is_not_preallocated(capsys):
    out = printed(capsys, "kv_cache", Concatenates)
    assert out.startswith("wrong: update replaces self.keys with a new tensor"), out
    assert "self.keys[self.length : end] = k" in out


def test_a_cache_that_replaces_only_its_values_is_named(capsys):
    out = printed(capsys, "kv_cache", ConcatenatesValuesOnly)
    assert out.startswith("wrong: update replaces self.values with a new tensor"), out


def test_a_cache_that_returns_copies_is_told_so(capsys):
    out = printed(capsys, "kv_cache", ReturnsCopies)
    assert out.startswith("wrong: update returns a copy of the stored keys, not a view into self.keys"), out


@pytest.mark.parametrize("cache_class", [LayerCache, load_script("solutions/07_generate.py").MyPreallocatedCache])
def test_a_preallocated_cache_is_still_correct(capsys, cache_class):
    assert printed(capsys, "kv_cache", cache_class) == "correct\n"


def test_known_cache_mistakes_keep_their_diagnoses(capsys):
    for diagnosis, mistake in check.KV_CACHE_MISTAKES.items():
        assert printed(capsys, "kv_cache", mistake) == f"wrong: {diagnosis}\n"


# --- harness: a bfloat16 mix-up gets a hint --------------------------------------------------------------------

def forward_without_float(model, tokens):
    """The solution's forward pass with the embedding rows left in bfloat16."""
    solution = load_script("solutions/06_full_model.py")
    p = model.params
    x = model.weights["tok_embeddings.weight"][tokens]  # no .float()
    freqs = model_frequencies(p, torch.arange(len(tokens)))
    for i in range(p.n_layers):
        x = solution.my_transformer_block(x, model.layer(i), p, freqs)
    return helpers.linear(helpers.rms_norm(x, model.weights["norm.weight"], p.norm_eps), model.weights["output.weight"])


def test_a_forward_pass_left_in_bfloat16_gets_a_hint(capsys):
    out = printed(capsys, "forward", forward_without_float)
    assert out.startswith("your function raised RuntimeError on the case 'the tiny model'"), out
    assert "convert what you take from model.weights, such as the embedding rows, with .float()" in out


def test_the_forward_solution_is_still_correct(capsys):
    assert printed(capsys, "forward", load_script("solutions/06_full_model.py").my_forward) == "correct\n"


def test_other_errors_get_no_bfloat16_hint():
    def broken():
        raise ValueError("shapes do not match")
    line = harness.verdict(broken, {"case": lambda fn: fn()}, lambda: 1, {})
    assert line == "your function raised ValueError on the case 'case': shapes do not match"


# --- harness: an int is an int ----------------------------------------------------------------------------------

@pytest.mark.parametrize("got, message", [
    (14336.0, "case: expected the int 14336, got float 14336.0: make it an int, with // or int() "
              "(/ always gives a float)"),
    (torch.tensor(14336), "case: expected the int 14336, got Tensor tensor(14336)"),
])
def test_a_float_or_tensor_for_an_int_is_wrong(got, message):
    line = harness.verdict(lambda: got, {"case": lambda fn: fn()}, lambda: 14336, {})
    assert line == f"wrong: {message}"


def test_a_bool_for_an_int_is_wrong():
    assert harness.verdict(lambda: True, {"case": lambda fn: fn()}, lambda: 1, {}) == \
        "wrong: case: expected the int 1, got bool True"
    assert not harness.same(True, 1) and harness.same(1, 1) and harness.same(True, True)  # (got, expected)


def test_a_float_mistake_is_still_diagnosed_as_itself():
    mistakes = {"the width is a float: round it": lambda: 14336.0}
    assert harness.verdict(lambda: 14336.0, {"case": lambda fn: fn()}, lambda: 14336, mistakes) == \
        "wrong: the width is a float: round it"


def test_hidden_dim_as_a_float_is_wrong_and_the_solution_correct(capsys):
    solution = load_script("solutions/05_feed_forward.py").my_hidden_dim
    assert printed(capsys, "hidden_dim", solution) == "correct\n"
    out = printed(capsys, "hidden_dim", lambda *args: float(solution(*args)))
    assert out.startswith("wrong: ") and "expected the int" in out and "got float" in out, out


# --- the tokenizer stops where Meta's does ----------------------------------------------------------------------

def test_stop_ids_are_metas_stop_tokens():
    meta = importlib.import_module("llama_models.llama3.tokenizer").Tokenizer.get_instance()
    ours = Tokenizer()
    assert ours.stop_ids == set(meta.stop_tokens) == {128001, 128008, 128009}
    assert ours.special_ids["<|eom_id|>"] == 128008


def small_tokenizer_json(tmp_path, special_names):
    """A tokenizer.json of the 256 bytes and the given special tokens, numbered from 256."""
    ranks = {bytes([b]): b for b in range(256)}
    special = {name: 256 + i for i, name in enumerate(special_names)}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json(ranks, special, SPLIT_PATTERN)), encoding="utf-8")
    return path, special


def test_a_llama3_tokenizer_json_without_eom_stops_at_the_other_two(tmp_path):
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    path, special = small_tokenizer_json(tmp_path, names)
    assert Tokenizer(path).stop_ids == {special["<|end_of_text|>"], special["<|eot_id|>"]}


def test_a_tokenizer_json_with_eom_stops_there_too(tmp_path):
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    path, special = small_tokenizer_json(tmp_path, names)
    assert Tokenizer(path).stop_ids == {special["<|end_of_text|>"], special["<|eom_id|>"], special["<|eot_id|>"]}


# --- RoPE with the model's whole scaling ------------------------------------------------------------------------

def test_rope_scaling_passed_whole_matches_the_model_where_the_factor_alone_does_not():
    raw = dict(dim=256, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=300, multiple_of=32, norm_eps=1e-5,
               rope_theta=500000.0, use_scaled_rope=True, rope_scaling_factor=16.0, rope_high_freq_factor=1.0)
    p = params_from_dict(raw)
    positions = torch.arange(9000)
    whole = rope_frequencies(p.head_dim, positions, p.rope_theta, p.rope_scaling)
    assert torch.equal(whole, model_frequencies(p, positions))
    factor_only = rope_frequencies(p.head_dim, positions, p.rope_theta, p.rope_scaling_factor)
    assert not torch.allclose(factor_only, whole)


@pytest.mark.parametrize("notebook", ["06_full_model", "07_generate"])
def test_the_notebooks_pass_rope_the_whole_scaling(notebook):
    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "rope_frequencies(" in code and "rope_scaling_factor" not in code
