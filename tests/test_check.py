"""helpers/check/: each solution in solutions/ is "correct", and each known mistake gets its own diagnosis."""

import pytest
import torch

from helpers import attention, check

from conftest import load_script

# Each check, and the solution it must accept: (file in solutions/, the stub's name in the notebook).
SOLUTIONS = {
    "most_frequent_pair": ("01_tokenizer", "my_most_frequent_pair"),
    "merge": ("01_tokenizer", "my_merge"),
    "embeddings": ("02_embeddings_rmsnorm", "my_embeddings"),
    "rms_norm": ("02_embeddings_rmsnorm", "my_rms_norm"),
    "head_queries": ("03_qkv_rope", "my_head_queries"),
    "rope": ("03_qkv_rope", "my_rope_positions"),
    "attention_weights": ("04_attention", "my_attention_weights"),
    "grouped_attention": ("04_attention", "my_grouped_attention"),
    "hidden_dim": ("05_feed_forward", "my_hidden_dim"),
    "feed_forward": ("05_feed_forward", "my_feed_forward"),
    "transformer_block": ("06_full_model", "my_transformer_block"),
    "forward": ("06_full_model", "my_forward"),
    "top_p": ("07_generate", "my_top_p"),
    "sampling_probs": ("07_generate", "my_sampling_probs"),
    "kv_cache": ("07_generate", "MyPreallocatedCache"),
    "quantize_rows": ("08_int8", "my_quantize_rows"),
    "dequantize_groups": ("08_int8", "my_dequantize"),
}


def solution(name):
    file, function = SOLUTIONS[name]
    return getattr(load_script(f"solutions/{file}.py"), function)


def printed(capsys, name, learner):
    getattr(check, name)(learner)
    return capsys.readouterr().out


def test_every_check_has_a_solution_and_mistakes():
    assert SOLUTIONS.keys() == check.MISTAKES.keys()
    assert all(len(mistakes) >= 2 for mistakes in check.MISTAKES.values())


@pytest.mark.parametrize("name", SOLUTIONS)
def test_the_solution_is_correct(capsys, name):
    assert printed(capsys, name, solution(name)) == "correct\n"


@pytest.mark.parametrize("name, diagnosis", [(name, d) for name, mistakes in check.MISTAKES.items() for d in mistakes])
def test_each_mistake_gets_its_own_diagnosis(capsys, name, diagnosis):
    assert_named(printed(capsys, name, check.MISTAKES[name][diagnosis]).rstrip("\n"), diagnosis)


# The known mistakes that raise on the checks' cases, by words of their diagnoses.
RAISING = ("the mean (or norm) of each row lost its dimension", "k is not transposed", "were not repeated to match",
           "einsum pairs q's heads", "an index into k's heads", "view_as_complex reads", "the angles and the pairs")


def assert_named(out, diagnosis):
    """`out`, a check's line for a known mistake, names it: after the error it raises, or as its output's cause."""
    if any(words in diagnosis for words in RAISING):
        assert out.startswith("your function raised ") and out.endswith(f"; likely, {diagnosis}"), out
    else:
        assert out == f"wrong: {diagnosis}", out


def unwritten(*args):
    ...  # your code


class UnwrittenCache:
    def __init__(self, capacity, n_kv_heads, head_dim):
        self.keys = self.values = torch.zeros(capacity, n_kv_heads, head_dim)
        self.length = 0

    def update(self, k, v):
        ...  # your code


@pytest.mark.parametrize("name", SOLUTIONS)
def test_an_unwritten_stub_is_not_done_yet(capsys, name):
    assert printed(capsys, name, UnwrittenCache if name == "kv_cache" else unwritten) == "not done yet\n"


def test_not_implemented_is_not_done_yet(capsys):
    def stub(x, weight, eps):
        raise NotImplementedError
    assert printed(capsys, "rms_norm", stub) == "not done yet\n"


def test_an_exception_is_reported_in_one_line(capsys):
    def broken(x, weight, eps):
        return x * weight[:3]  # a shape that does not broadcast
    out = printed(capsys, "rms_norm", broken)
    assert out.startswith("your function raised RuntimeError on the case 'the tiny model, eps = 1e-05': ")
    assert out.count("\n") == 1


def test_an_exception_names_the_case_that_raised_it(capsys):
    """A function written for the tiny model's sizes (8 heads of 8) runs there, and raises on the other model."""
    def eight_heads(x, wq, n_heads, h):
        return (x @ wq.T).view(len(x), 8, 8)[:, h]
    out = printed(capsys, "head_queries", eight_heads)
    assert out.startswith("your function raised RuntimeError on the case 'a random model of dim 96 (6 heads of 16, "
                          "2 KV heads), head 0': ")


def test_a_wrong_shape_is_named(capsys):
    out = printed(capsys, "rms_norm", lambda x, weight, eps: solution("rms_norm")(x, weight, eps).T)
    assert out == "wrong: the tiny model, eps = 1e-05: wrong shape: expected (17, 64), got (64, 17)\n"


def test_a_nan_in_attention_is_explained(capsys):
    """A mask that hides the diagonal too leaves the first query no key: softmax gives NaN, and the check says why."""
    def diagonal_hidden(q, k):
        hidden = torch.ones(len(q), len(k), dtype=torch.bool).triu()
        return torch.softmax((q @ k.T / q.shape[-1] ** 0.5).masked_fill(hidden, float("-inf")), dim=-1)
    out = printed(capsys, "attention_weights", diagonal_hidden)
    assert "your output holds NaN" in out and "the first at index (0, 0)" in out and "nan times" not in out
    assert "a row with every key masked gives NaN in softmax" in out


def test_any_other_nan_is_explained(capsys):
    out = printed(capsys, "rms_norm", lambda x, weight, eps: (x - x) / (x - x) * weight)
    assert "your output holds NaN" in out and "a NaN comes from 0/0" in out and "nan times" not in out


def test_an_unknown_mistake_says_how_far_and_where(capsys):
    def off_at_one_place(x, weight, eps):
        out = solution("rms_norm")(x, weight, eps)
        out[3, 5] += 0.5 * out.abs().max()
        return out
    out = printed(capsys, "rms_norm", off_at_one_place)
    assert out.startswith("wrong: the tiny model, eps = 1e-05: off by up to 0.5 times the largest expected value")
    assert "first at index (3, 5)" in out


def test_a_wrong_dtype_and_a_wrong_length_are_named(capsys):
    assert printed(capsys, "rms_norm", lambda x, weight, eps: solution("rms_norm")(x.double(), weight, eps)) == \
        "wrong: the tiny model, eps = 1e-05: wrong dtype: expected torch.float32, got torch.float64\n"
    assert printed(capsys, "merge", lambda ids, pair, new_id: ids[:-1]) == \
        "wrong: merging 't' 'h' into 256: wrong length: expected 73 items, got 76\n"


def test_the_grouped_attention_reference_is_helpers_attention():
    """The GQA check's reference, built on helpers.attention_weights, equals helpers.attention with wo = identity."""
    model, p = check.tiny_model(), check.tiny_model().params
    layer = model.layer(0)
    q, k, v = check.queries_keys_values()
    identity = torch.eye(p.n_heads * p.head_dim)
    expected = attention(check.normalised(), layer["wq"], layer["wk"], layer["wv"], identity, p.n_heads,
                         p.n_kv_heads, check.freqs())
    torch.testing.assert_close(check.grouped_attention_reference(q, k, v).reshape(len(q), -1), expected)


def test_each_transformer_block_case_runs_on_its_own_layers_input(capsys):
    """Layer i's case gives the learner layer i's weights with layer i's input, not another layer's, on each model."""
    calls = []

    def recording(x, layer, params, freqs):
        calls.append((x.clone(), layer, params))
        return solution("transformer_block")(x, layer, params, freqs)

    assert printed(capsys, "transformer_block", recording) == "correct\n"
    for x, layer, params in calls:
        name = next(name for name in check.MODELS if check.model(name).params is params)
        model = check.model(name)
        i = next(i for i in range(params.n_layers) if layer["wq"] is model.layer(i)["wq"])
        torch.testing.assert_close(x, check.layer_inputs(i, name)["x"], rtol=0, atol=0, msg=f"{name}, layer {i}")
    assert len(calls) == 4 and len({id(params) for *_, params in calls}) == 2


def test_the_random_models_sizes_all_differ():
    """No size of the model the checks add equals another of its sizes, or the tiny model's (the tiny model's
    dim is head_dim squared and its n_heads equals head_dim, which hid mistakes)."""
    tiny, other = check.model("tiny").params, check.model(check.MODELS[1]).params
    sizes = [other.dim, other.head_dim, other.n_heads, other.n_kv_heads, other.n_rep, other.hidden_dim,
             other.vocab_size, len(check.harness.tokens(check.MODELS[1]))]
    assert len(set(sizes)) == len(sizes)
    assert not {other.dim, other.head_dim, other.n_heads, other.n_rep} & {tiny.dim, tiny.head_dim, tiny.n_heads,
                                                                            tiny.n_rep}
    assert other.head_dim ** 2 != other.dim and other.rope_theta != tiny.rope_theta


def test_the_scaled_model_is_scaled_and_tied():
    scaled = check.model(check.MODELS[2])
    assert scaled.params.rope_scaling is not None and scaled.tied_output and scaled.params.n_layers == 2
