"""The synthetic-checkpoint writer, the 8B benchmark's parts and `linear`, on small shapes (no timing is asserted)."""

import ctypes
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import load_script

import helpers.compute
from helpers import REPO_ROOT, expected_shapes, forward, linear, load_model, params_from_dict


writer = load_script("scripts/write_synthetic_checkpoint.py")
bench = load_script("bench/fit_8b.py")

# The 8B's params with a small dim and 2 layers; the vocabulary stays 128256 so the real tokenizer fits.
SMALL = writer.LLAMA3_8B_PARAMS | {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "multiple_of": 32}


@pytest.fixture(scope="module", autouse=True)
def give_memory_back():
    """After these tests, hand freed heap memory back to the OS (glibc), so that later tests that
    measure this process's memory growth (test_loading) see fresh allocations, not reused ones."""
    yield
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return writer.write_checkpoint(tmp_path_factory.mktemp("synthetic") / "small", SMALL)


def test_writes_the_8b_params_and_every_tensor_in_bf16(small_dir):
    assert json.loads((small_dir / "params.json").read_text()) == SMALL
    weights = torch.load(small_dir / "consolidated.00.pth", mmap=True, weights_only=True)
    shapes = expected_shapes(params_from_dict(SMALL))
    assert {name: tuple(t.shape) for name, t in weights.items()} == shapes
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert torch.equal(weights["layers.1.ffn_norm.weight"], torch.ones(64, dtype=torch.bfloat16))
    w1 = weights["layers.0.feed_forward.w1.weight"].float()
    assert 0.018 < w1.std() < 0.022 and abs(w1.mean()) < 1e-3
    assert writer.checkpoint_bytes(params_from_dict(SMALL)) == sum(2 * t.numel() for t in weights.values())


def test_the_8b_shapes_come_from_helpers():
    p = params_from_dict(writer.LLAMA3_8B_PARAMS)
    assert (p.hidden_dim, p.n_layers, p.vocab_size) == (14336, 32, 128256)
    assert round(writer.checkpoint_bytes(p) / 1e9, 2) == 16.06


def test_same_seed_same_values(small_dir, tmp_path):
    again = writer.write_checkpoint(tmp_path / "again", SMALL)
    other = writer.write_checkpoint(tmp_path / "other", SMALL, seed=1)
    load = lambda d: torch.load(d / "consolidated.00.pth", weights_only=True)  # noqa: E731
    first, second, third = load(small_dir), load(again), load(other)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["output.weight"], third["output.weight"])


def test_refuses_when_the_disk_is_too_small(tmp_path):
    tiny_disk = lambda path: SimpleNamespace(free=10 << 20)  # noqa: E731
    with pytest.raises(writer.NotEnoughSpace, match="Not enough disk space.*needs"):
        writer.write_checkpoint(tmp_path / "out", SMALL, disk_usage=tiny_disk)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_fill(*args):
        raise OSError("disk went away")
    monkeypatch.setattr(writer, "_fill", broken_fill)
    with pytest.raises(OSError, match="disk went away"):
        writer.write_checkpoint(tmp_path / "out", SMALL)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite(small_dir):
    with pytest.raises(FileExistsError, match="already exists"):
        writer.write_checkpoint(small_dir, SMALL)


def test_command_line_checks_the_layer_count(capsys):
    with pytest.raises(SystemExit):
        writer.main(["/tmp/never-written", "--layers", "0"])
    assert "--layers must be between 1 and 32" in capsys.readouterr().err


def run_child(capsys, mode, model_dir, decode_tokens=0):
    bench.child(mode, model_dir, "", decode_tokens)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("RESULT ")
    return json.loads(line[7:])


def test_the_tutorial_way_computes_the_same_logits_as_helpers(small_dir):
    """The anti-pattern is slow and memory-hungry, but it must compute the same model, or the comparison is unfair."""
    config, weights, embedding, tokenizer = bench.tutorial_load(small_dir)
    tokens = tokenizer.encode(bench.PROMPT)
    with torch.inference_mode():
        tutorial = bench.tutorial_forward(config, weights, embedding, tokens).float()
        ours = forward(load_model(small_dir, verbose=False), tokens)[-1]  # load_model accepts the checkpoint
    assert ours.isfinite().all()
    torch.testing.assert_close(tutorial, ours, atol=0.02, rtol=0.05)
    assert tutorial.argmax() == ours.argmax()


@pytest.mark.parametrize("mode", ["tutorial", "helpers", "decode"])
def test_each_measurement_reports_its_figures(small_dir, capsys, mode):
    result = run_child(capsys, mode, small_dir, decode_tokens=3)
    expected = {"load_s", "prefill_s", "vmhwm_kib"} | ({"tokens_per_s"} if mode == "decode" else {"again_s"})
    assert expected <= set(result)
    assert result["vmhwm_kib"] > 0


def test_limit_check_skips_without_a_cgroup_v1_memory_controller(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CGROUP_ROOT", tmp_path / "nowhere")
    assert "no cgroup v1 memory controller" in bench.cgroup_v1_problem()


def test_a_sigkill_reads_as_out_of_memory():
    assert "out of memory" in bench.failure({"returncode": -9, "oom_kills": 1})
    assert bench.failure({"returncode": 0}) is None
    assert "exit status 1" in bench.failure({"returncode": 1})


def test_bench_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert bench.main([str(tmp_path)]) == 1
    assert "write_synthetic_checkpoint.py" in capsys.readouterr().err


def test_linear_buffer_made_under_inference_mode_works_outside_it(monkeypatch):
    """The reused float32 buffer of `linear` must not become an inference tensor (which could not be written later)."""
    w, x = torch.randn(300, 64).to(torch.bfloat16), torch.randn(3, 64)
    monkeypatch.setattr(helpers.compute, "_buffer", torch.empty(0))
    with torch.inference_mode():
        linear(x, w)
    torch.testing.assert_close(linear(x, w), x @ w.float().T)


def test_linear_with_bf16_weights_passes_gradients_to_x():
    w, x = torch.randn(300, 64).to(torch.bfloat16), torch.randn(3, 64, requires_grad=True)
    linear(x, w).sum().backward()
    torch.testing.assert_close(x.grad, w.float().sum(0).expand(3, 64))
