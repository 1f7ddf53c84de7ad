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
    assert printed(capsys, name, check.MISTAKES[name][diagnosis]) == f"wrong: {diagnosis}\n"


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
    assert out.startswith("your function raised RuntimeError: ") and out.count("\n") == 1


def test_a_wrong_shape_is_named(capsys):
    out = printed(capsys, "rms_norm", lambda x, weight, eps: solution("rms_norm")(x, weight, eps).T)
    assert out == "wrong: eps = 1e-05: wrong shape: expected (17, 64), got (64, 17)\n"


def test_an_unknown_mistake_says_how_far_and_where(capsys):
    def off_at_one_place(x, weight, eps):
        out = solution("rms_norm")(x, weight, eps)
        out[3, 5] += 0.5 * out.abs().max()
        return out
    out = printed(capsys, "rms_norm", off_at_one_place)
    assert out.startswith("wrong: eps = 1e-05: off by up to 0.5 times the largest expected value")
    assert "first at index (3, 5)" in out


def test_a_wrong_dtype_and_a_wrong_length_are_named(capsys):
    assert printed(capsys, "rms_norm", lambda x, weight, eps: solution("rms_norm")(x.double(), weight, eps)) == \
        "wrong: eps = 1e-05: wrong dtype: expected torch.float32, got torch.float64\n"
    assert printed(capsys, "merge", lambda ids, pair, new_id: ids[:-1]) == \
        "wrong: merging 't' 'h' into 256: wrong length: expected 73 items, got 76\n"


def test_the_grouped_attention_reference_is_helpers_attention():
    """The GQA check's reference, built on helpers.attention_weights, equals helpers.attention with wo = identity."""
    model, p = check.tiny_model(), check.tiny_model().params
    layer = model.layer(0)
    q, k, v = check.queries_keys_values()
    identity = torch.eye(p.n_heads * p.head_dim)
    expected = attention(check.normalised(), layer["wq"], layer["wk"], layer["wv"], identity, p.n_heads,
                         p.n_kv_heads, check.prompt_freqs())
    torch.testing.assert_close(check.grouped_attention_reference(q, k, v).reshape(len(q), -1), expected)


def test_each_transformer_block_case_runs_on_its_own_layers_input(capsys):
    """Layer i's case gives the learner layer i's weights with layer i's input, not another layer's."""
    model, calls = check.tiny_model(), []

    def recording(x, layer, params, freqs):
        calls.append((x.clone(), layer))
        return solution("transformer_block")(x, layer, params, freqs)

    assert printed(capsys, "transformer_block", recording) == "correct\n"
    for x, layer in calls:
        i = next(i for i in range(model.params.n_layers) if layer["wq"] is model.layer(i)["wq"])
        torch.testing.assert_close(x, check.layer_inputs(i)["x"], rtol=0, atol=0, msg=f"layer {i}'s case")
    assert len(calls) == 2
