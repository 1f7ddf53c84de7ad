"""The synthetic-checkpoint writer, the fit benchmark's parts and `linear`, on small shapes (no timing is asserted)."""

import ctypes
import json
import os
import re
from types import SimpleNamespace

import pytest
import torch

import helpers.compute
from helpers import SHAPES, expected_shapes, forward, linear, load_model, params_from_dict, quantize_model
from helpers.params import DEFAULT_SHAPE, LLAMA3_8B_PARAMS, checkpoint_bytes

from conftest import load_script

writer = load_script("scripts/write_synthetic_checkpoint.py")
bench = load_script("bench/fit.py")

# The 8B's params with a small dim and 2 layers; the vocabulary stays 128256 so the real tokenizer fits.
SMALL = LLAMA3_8B_PARAMS | {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "multiple_of": 32}
# Llama 3.2 1B's params (scaled RoPE) made as small; written tied, as the 3.2 models are: no output.weight.
SMALL_TIED = SHAPES["3.2-1b"].params | {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "multiple_of": 32}
# llama_models' name for each shape, whose arch_args are Meta's params.json.


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


@pytest.fixture(scope="module")
def small_tied_dir(tmp_path_factory):
    return writer.write_checkpoint(tmp_path_factory.mktemp("synthetic") / "small-tied", SMALL_TIED, tied=True)


def test_writes_the_8b_params_and_every_tensor_in_bf16(small_dir):
    assert json.loads((small_dir / "params.json").read_text()) == SMALL
    weights = torch.load(small_dir / "consolidated.00.pth", mmap=True, weights_only=True)
    shapes = expected_shapes(params_from_dict(SMALL))
    assert {name: tuple(t.shape) for name, t in weights.items()} == shapes
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert torch.equal(weights["layers.1.ffn_norm.weight"], torch.ones(64, dtype=torch.bfloat16))
    w1 = weights["layers.0.feed_forward.w1.weight"].float()
    assert 0.018 < w1.std() < 0.022 and abs(w1.mean()) < 1e-3
    assert checkpoint_bytes(params_from_dict(SMALL)) == sum(2 * t.numel() for t in weights.values())


def test_the_8b_shapes_come_from_helpers():
    p = params_from_dict(LLAMA3_8B_PARAMS)
    assert (p.hidden_dim, p.n_layers, p.vocab_size) == (14336, 32, 128256)
    assert round(checkpoint_bytes(p) / 1e9, 2) == 16.06


def test_the_shapes_are_metas():
    from llama_models.sku_list import resolve_model

    assert writer.SHAPES is SHAPES and all(shape.sku for shape in SHAPES.values())
    for key, shape in SHAPES.items():
        arch = resolve_model(shape.sku).arch_args
        if not arch["use_scaled_rope"]:  # Meta-Llama-3-8B's own params.json has no use_scaled_rope key
            arch = {k: v for k, v in arch.items() if k != "use_scaled_rope"}
        assert shape.params == arch, key
        assert (shape.rope_scaling is not None) == arch.get("use_scaled_rope", False), key
    assert {key for key, shape in writer.SHAPES.items() if shape.tied} == {"3.2-1b", "3.2-3b"}
    assert SHAPES[DEFAULT_SHAPE].params is LLAMA3_8B_PARAMS


@pytest.mark.parametrize("key, hidden_dim, gigabytes", [
    ("3-8b", 14336, 16.06), ("3.1-8b", 14336, 16.06), ("3.2-1b", 8192, 2.47), ("3.2-3b", 8192, 6.43)])
def test_each_shape_and_its_size(key, hidden_dim, gigabytes):
    shape = writer.SHAPES[key]
    p = params_from_dict(shape.params)
    assert p.hidden_dim == hidden_dim
    assert round(checkpoint_bytes(p, shape.tied) / 1e9, 2) == gigabytes
    names = expected_shapes(p, shape.tied)
    assert ("output.weight" in names) != shape.tied
    assert set(expected_shapes(p)) - set(names) == ({"output.weight"} if shape.tied else set())


def test_a_tied_shape_has_no_output_weight_and_loads_tied(small_tied_dir):
    assert json.loads((small_tied_dir / "params.json").read_text()) == SMALL_TIED  # nothing but Meta's keys
    weights = torch.load(small_tied_dir / "consolidated.00.pth", mmap=True, weights_only=True)
    assert "output.weight" not in weights
    p = params_from_dict(SMALL_TIED)
    assert {name: tuple(t.shape) for name, t in weights.items()} == expected_shapes(p, tied=True)
    assert checkpoint_bytes(p, tied=True) == sum(2 * t.numel() for t in weights.values())
    model = load_model(small_tied_dir, verbose=False)
    assert model.tied_output and model.params.rope_scaling_factor is not None


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
    with pytest.raises(SystemExit):
        writer.main(["/tmp/never-written", "--shape", "3.2-1b", "--layers", "17"])
    assert "--layers must be between 1 and 16 (Llama 3.2 1B has 16 layers)" in capsys.readouterr().err


def test_command_line_writes_the_shape_asked_for(tmp_path, monkeypatch, capsys):
    written = {}

    def stand_in(out, raw, seed, tied):
        written.update(raw=raw, tied=tied)
        out.mkdir()
        (out / "consolidated.00.pth").write_bytes(b"")
        return out

    monkeypatch.setattr(writer, "write_checkpoint", stand_in)
    assert writer.main([str(tmp_path / "out"), "--shape", "3.2-3b", "--layers", "2"]) == 0
    assert written == {"raw": SHAPES["3.2-3b"].params | {"n_layers": 2}, "tied": True}
    assert "Llama 3.2 3B's shapes, 2 of 28 layers, output tied" in capsys.readouterr().out


def run_child(capsys, mode, model_dir, decode_tokens=0):
    bench.child(mode, model_dir, "", decode_tokens)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("RESULT ")
    return json.loads(line[7:])


@pytest.mark.parametrize("folder", ["small_dir", "small_tied_dir"])
def test_the_tutorial_way_computes_the_same_logits_as_helpers(request, folder):
    """The anti-pattern is slow and memory-hungry, but it must compute the same model, or the comparison is unfair.

    On the tied, scaled-RoPE shape too: its output layer is the embedding table, and its RoPE is Llama 3.1's.
    """
    small_dir = request.getfixturevalue(folder)
    config, weights, embedding, tokenizer = bench.tutorial_load(small_dir)
    tokens = tokenizer.encode(bench.PROMPT)
    with torch.inference_mode():
        tutorial = bench.tutorial_forward(config, weights, embedding, tokens).float()
        ours = forward(load_model(small_dir, verbose=False), tokens)[-1]  # load_model accepts the checkpoint
    assert ours.isfinite().all()
    torch.testing.assert_close(tutorial, ours, atol=0.02, rtol=0.05)
    assert tutorial.argmax() == ours.argmax()


@pytest.mark.parametrize("mode", ["tutorial", "helpers", "decode", "decode-int8"])
@pytest.mark.parametrize("folder", ["small_dir", "small_tied_dir"])
def test_each_measurement_reports_its_figures(request, capsys, mode, folder):
    result = run_child(capsys, mode, request.getfixturevalue(folder), decode_tokens=3)
    decode = {"tokens_per_s", "warmup_prefill_s", "first_token_s"}
    int8 = {"quantize_s", "int8_matrices_bytes"} if mode == "decode-int8" else set()
    expected = {"load_s", "prefill_s", "vmhwm_kib"} | (decode if mode.startswith("decode") else {"again_s"}) | int8
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


def test_bench_sizes_come_from_the_checkpoint(small_dir, small_tied_dir):
    for folder, params in ((small_dir, SMALL), (small_tied_dir, SMALL_TIED)):
        size = (folder / "consolidated.00.pth").stat().st_size
        assert bench.checkpoint_size(folder) == size
        assert bench.tutorial_need(folder) == size + 4 * params["vocab_size"] * params["dim"] + bench.GiB
    assert "dim 64, 2 layers, 8 heads, 2 key/value heads, scaled RoPE" == bench.describe(small_tied_dir)
    assert bench.safety_limit() % bench.GiB == 0 and bench.safety_limit() >= bench.GiB


def test_others_busy_is_a_share_of_the_cpus():
    meter = bench.OthersMeter()
    sum(i * i for i in range(300_000))  # this process's own work is not the others'
    assert 0.0 <= meter.share() <= 1.0


def test_bench_memory_limits_option():
    assert bench.gib_list("2,4") == (2, 4)
    for bad in ("", "4,x", "0", "-2"):
        with pytest.raises(bench.argparse.ArgumentTypeError):
            bench.gib_list(bad)


def test_linear_buffer_made_under_inference_mode_works_outside_it(monkeypatch):
    """The reused float32 buffer of `linear` must not become an inference tensor (which could not be written later)."""
    w, x = torch.randn(300, 64).to(torch.bfloat16), torch.randn(3, 64)
    helpers.compute.release_buffer()
    with torch.inference_mode():
        linear(x, w)
    torch.testing.assert_close(linear(x, w), x @ w.float().T)


def test_linear_with_bf16_weights_passes_gradients_to_x():
    w, x = torch.randn(300, 64).to(torch.bfloat16), torch.randn(3, 64, requires_grad=True)
    linear(x, w).sum().backward()
    torch.testing.assert_close(x.grad, w.float().sum(0).expand(3, 64))


def test_an_empty_compile_cache_is_handed_to_the_child(monkeypatch, tmp_path):
    """--compile-cache empty: the child's torch.compile cache is the folder given, not torch's own."""
    seen = {}

    class Started(Exception):
        pass

    def popen(command, env=None, **kwargs):
        seen["env"] = env
        raise Started

    monkeypatch.setattr(bench.subprocess, "Popen", popen)
    with pytest.raises(Started):
        bench.run_child("decode", tmp_path, compile_cache=tmp_path / "compile")
    assert seen["env"]["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
    with pytest.raises(Started):
        bench.run_child("decode", tmp_path)
    assert seen["env"].get("TORCHINDUCTOR_CACHE_DIR") == os.environ.get("TORCHINDUCTOR_CACHE_DIR")


@pytest.mark.parametrize("kind", [[], ["--bf16"]])
def test_the_decode_step_benchmark_times_every_product_of_a_step(small_tied_dir, capsys, kind):
    from helpers.int8 import is_matrix

    load_script("bench/decode_step.py").main([str(small_tied_dir), "--rounds", "2", *kind])
    printed = capsys.readouterr().out
    params = params_from_dict(SMALL_TIED)
    rows = {" ".join(line.split()[:2]): int(line.split()[2]) for line in printed.splitlines()
            if line.lstrip().startswith("(")}  # "(64, 64)" -> its calls per token
    shapes = {name: shape for name, shape in expected_shapes(params).items() if is_matrix(name)}
    if kind:  # bf16: every layer's 7 products, and the output layer's
        assert set(rows) == {str(shape) for shape in shapes.values()}
        assert sum(rows.values()) == 7 * params.n_layers + 1
    else:  # int8: wq, wk and wv joined, and w1 and w3: 4 products a layer
        layer0 = {name.split(".")[-2]: shape for name, shape in shapes.items() if name.startswith("layers.0.")}
        joined = [(layer0["wq"][0] + layer0["wk"][0] + layer0["wv"][0], params.dim), (2 * layer0["w1"][0], params.dim)]
        assert set(rows) == {str(shape) for shape in [*joined, layer0["wo"], layer0["w2"], shapes["output.weight"]]}
        assert sum(rows.values()) == 4 * params.n_layers + 1
    for figure in ("decode step:", "its matrix products:", "the step without them:", "the same bytes read by row sums:",
                   "no compiled kernel"):  # these small matrices take the block path
        assert figure in printed
    script = load_script("bench/decode_step.py")
    read_mib = 2 * (script.last_cache_bytes() or 1 << 27) >> 20
    assert re.search(rf"each zero product after a read of {read_mib} MiB \(untimed\) that leaves nothing of the step "
                     r"in the caches: \d+\.\d ms", printed)
    step, products, rest = (float(ms) for ms in re.search(
        r"the step with its products timed inside it: ([\d.]+) ms, ([\d.]+) ms of them in products, ([\d.]+) ms in "
        r"the rest", printed).groups())
    assert 0 < products < step and 0 < rest < step  # every product of the step timed, each within it
    assert re.search(r"in the rest; round by round, the products inside it took [\d.]+ times their time alone", printed)


def test_the_decode_step_benchmark_empties_the_caches_before_every_product_it_skips(small_tied_dir):
    """The step without products, the caches emptied before each: `before` runs once a product, joined or not."""
    script = load_script("bench/decode_step.py")
    model = load_model(small_tied_dir, verbose=False)
    reads = []
    with torch.inference_mode(), script.products_skipped(lambda: reads.append(1)):
        logits = forward(model, [1, 2, 3])
    assert len(reads) == 7 * model.params.n_layers + 1  # 7 products a layer, and the output layer
    assert torch.equal(logits, torch.zeros_like(logits))  # the output layer's product skipped too
    assert script.last_cache_bytes() is None or script.last_cache_bytes() >= 1 << 20


def test_the_decode_step_benchmark_compares_numbers_of_parts(small_tied_dir, capsys, fresh_fused):
    """--compare-parts times the compiled kernels reading each matrix in other numbers of parts, taking turns with
    helpers' own (the small model's matrices take the compiled kernel here: fresh_fused lowers the thresholds)."""
    from helpers import kernels

    load_script("bench/decode_step.py").main([str(small_tied_dir), "--rounds", "2", "--compare-parts", "1"])
    printed = capsys.readouterr().out
    assert "one compiled call on 8 rows:" in printed
    assert f"N = {kernels.PARTS} " in printed
    assert "N = 1 " in printed and f"times the time of {kernels.PARTS} (helpers')" in printed


@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_the_decode_step_benchmark_compares_the_kernels_two_forms(small_tied_dir, capsys, fresh_fused, kind):
    """--compare-forms (--compare-int8-forms, as it was first named) times the kernel in helpers' form and in the
    other, taking turns, and leaves helpers' form as it was."""
    from helpers import kernels

    form = kernels.words_for(kind == "int8")
    flags = ["--compare-int8-forms"] if kind == "int8" else ["--compare-forms", "--bf16"]
    load_script("bench/decode_step.py").main([str(small_tied_dir), "--rounds", "2", *flags])
    printed = capsys.readouterr().out
    assert kernels.words_for(kind == "int8") == form
    lines = printed.split(f"the {kind} kernel alone, its numbers read:\n")[1].splitlines()
    words = {"int8": "four at a time from 32-bit words", "bf16": "two at a time from 32-bit words"}[kind]
    assert [line.split("  ")[1].strip() for line in lines[:2]] == \
        ([words, "each one as it is"] if form else ["each one as it is", words])
    assert "helpers' form here" in lines[0] and "times the time of helpers'" in lines[1]


@pytest.mark.parametrize("kind", ["bf16", "int8", "words"])
def test_the_decode_step_benchmark_compares_adding_up_wide_rows_in_blocks_of_columns(small_tied_dir, capsys,
                                                                                    fresh_fused, monkeypatch, kind):
    """--compare-columns times the kernel adding up wide rows in blocks of columns (helpers' way) and whole,
    taking turns; the small model's rows of 64 and 224 are wide enough with COLUMNS = 8, as numbers and as bf16
    words (32 and 112 a row). Int8 words: no blocks."""
    from helpers import kernels, matvec

    monkeypatch.setattr(kernels, "INT8_WORDS", kind == "words")
    monkeypatch.setattr(matvec, "COLUMNS", 8)
    load_script("bench/decode_step.py").main([str(small_tied_dir), "--rounds", "2", "--compare-columns"]
                                             + (["--bf16"] if kind == "bf16" else []))
    printed = capsys.readouterr().out
    if kind == "words":
        assert "--compare-columns: the int8 kernel here reads words" in printed
        return
    table, compared = printed.split(f"the {kind[:4]} kernel alone on the matrices whose rows it adds up 8 numbers at "
                                    "a time, and adding up their rows whole:\n")
    shapes = re.findall(r"^ +(\(\d+, \d+\)) +\d+ ", table, re.MULTILINE)  # the step's matrices, all wide
    assert shapes and [line.split(" calls:")[0].rsplit(" ", 1)[0].strip() for line in compared.splitlines()] == shapes
    assert all("ms in blocks," in line and "ms whole; round by round, whole rows took" in line
               for line in compared.splitlines())


@pytest.mark.parametrize("parts", ["0", "two", "2,,4", ""])
def test_the_decode_step_benchmark_refuses_parts_that_are_not_positive_numbers(small_tied_dir, capsys, parts):
    with pytest.raises(SystemExit):
        load_script("bench/decode_step.py").main([str(small_tied_dir), "--compare-parts", parts])
    assert "is not a list of positive whole numbers" in capsys.readouterr().err


def test_the_ratios_table_prints_the_course_alone_where_llama_cpp_is_not_built(small_dir, tmp_path, capsys):
    """bench/ratios.py on a small model with no llama.cpp build: the course's side, and a line saying so."""
    ratios = load_script("bench/ratios.py")
    ratios.main([str(small_dir), "--work", str(tmp_path), "--threads", "1", "--repetitions", "2", "--gen", "2",
                 "--prompt", "5", "--reads", "1", "--read-mib", "8", "--products", "1", "--product-size", "64"])
    printed = capsys.readouterr().out
    assert "llama.cpp is not built in" in printed and "Machine: " in printed
    assert "Read rate (best of 1 passes of float32 sum and amax and bfloat16 sum over 8 MiB through torch): " in printed
    assert "Float32 product rate (best of 1 products of two 64 × 64 matrices by @): " in printed
    rows = [line for line in printed.splitlines() if line.startswith("| small (2 layers, dim 64) |")]
    assert len(rows) == 6  # bf16, int8 and int8 with int8 activations; prefill and decode; one thread
    assert all("| not built | - |" in row for row in rows)
    assert [row.split(" | ")[1:4] for row in rows] == [
        ["bf16", "1", "prefill 5 (s)"], ["bf16", "1", "decode 2 (tokens/s)"],
        ["int8 / Q8_0", "1", "prefill 5 (s)"], ["int8 / Q8_0", "1", "decode 2 (tokens/s)"],
        ["int8, x in int8 / Q8_0", "1", "prefill 5 (s)"], ["int8, x in int8 / Q8_0", "1", "decode 2 (tokens/s)"]]


def test_the_ratios_prompt_limit_counts_every_layer_matrix_for_each_token_and_the_output_layer_once(small_dir):
    """bench/ratios.py's prompt operations, against the count from params.json's numbers."""
    ratios = load_script("bench/ratios.py")
    model = load_model(small_dir, verbose=False)
    p = model.params
    head_dim = p.dim // p.n_heads
    layer = 2 * p.dim * p.n_heads * head_dim + 2 * p.dim * p.n_kv_heads * head_dim + 3 * p.dim * p.hidden_dim
    expected = 2 * (5 * p.n_layers * layer + p.vocab_size * p.dim)
    assert ratios.prompt_operations(model, 5) == expected
    assert ratios.prompt_operations(quantize_model(model), 5) == expected


def test_the_ratios_table_with_a_depth_decodes_after_that_many_positions_in_both(small_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    """--depth N: the course's cache holds N positions before the timed prompt and decoding, and llama-bench
    is asked for the same with -d N."""
    ratios = load_script("bench/ratios.py")
    lengths, commands = [], []  # (positions in the cache, new tokens) of each forward pass; llama-bench's commands
    forward = ratios.forward

    def counted_forward(model, tokens, cache, **options):
        lengths.append((cache.length, len(tokens)))
        return forward(model, tokens, cache, **options)

    monkeypatch.setattr(ratios, "forward", counted_forward)
    ratios.main([str(small_dir), "--work", str(tmp_path), "--threads", "1", "--repetitions", "1", "--gen", "2",
                 "--prompt", "5", "--reads", "1", "--read-mib", "8", "--types", "bf16", "--depth", "7"])
    rows = [line.split(" | ")[3] for line in capsys.readouterr().out.splitlines() if line.startswith("| small")]
    assert rows == ["prefill 5 after 7 (s)", "decode 2 after 7 (tokens/s)"]
    assert lengths[-4:] == [(0, 7), (7, 5), (12, 1), (13, 1)]  # the depth, untimed; the prompt; two tokens
    result = '[{"avg_ns": 1e9, "avg_ts": 9.0}]'  # llama-bench's JSON, the fields read
    monkeypatch.setattr(ratios.llama_cpp, "run", lambda command: commands.append(command) or result)
    ratios.llama_cpp_run(tmp_path, tmp_path / "m.gguf", 17, 32, 2, depth=512)
    ratios.llama_cpp_run(tmp_path, tmp_path / "m.gguf", 17, 32, 2)
    assert [command[command.index("-d") + 1] if "-d" in command else None for command in commands] == \
        ["512", "512", None, None]


def file_system_of(path):
    """The type of the file system holding `path`, from /proc/mounts (the longest mount point above it)."""
    path, best = str(path.resolve()), ("", "")
    for line in open("/proc/mounts"):
        point, kind = line.split()[1:3]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
            best = (point, kind)
    return best[1]


def test_the_ratios_page_cache_tools_take_a_mapped_checkpoint_out_and_see_it_read_back(small_dir):
    """bench/ratios.py's drop_from_page_cache pages out the checkpoint this process maps, and cached_share sees
    it gone, then back after a forward pass. In memory-only file systems (tmpfs), the pages cannot leave."""
    ratios = load_script("bench/ratios.py")
    model = load_model(small_dir)
    (path,) = ratios.checkpoint_files(small_dir)
    assert path.name == "consolidated.00.pth"
    assert [end - start for start, end in ratios.mapped_ranges(path)] and all(
        end > start for start, end in ratios.mapped_ranges(path))
    with torch.inference_mode():
        forward(model, [1, 2, 3])
    path.read_bytes()  # the whole file, the zip's own records and padding included
    assert ratios.cached_share(path) == 1.0
    ratios.drop_from_page_cache(path)
    stays = file_system_of(path) in ("tmpfs", "ramfs")
    assert ratios.cached_share(path) == (1.0 if stays else 0.0)
    with torch.inference_mode():
        forward(model, [1, 2, 3])  # every matrix read again, from the file; of the embedding table, 3 rows
    assert ratios.cached_share(path) > 0.4  # the embedding table is half of this small model's file


def test_the_ratios_turns_start_with_the_other_sides_file_out_of_the_page_cache(small_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    """Where the two sides' files do not fit in memory together, llama.cpp's file is dropped before every
    course warm-up and the course's before every llama.cpp turn; a line reports what stayed cached. The
    machine's rates are measured before each side's turns."""
    ratios = load_script("bench/ratios.py")
    events = []
    monkeypatch.setattr(ratios, "drop_from_page_cache", lambda path: events.append(("drop", path.name)))
    monkeypatch.setattr(ratios, "cached_share", lambda path: 0.5 if path.suffix == ".gguf" else 1.0)
    monkeypatch.setattr(ratios, "llama_cpp_run", lambda *args: events.append(("llama.cpp",)) or (1.0, 10.0))
    real_run = ratios.course_run
    monkeypatch.setattr(ratios, "course_run", lambda *args: events.append(("course", args[2])) or real_run(*args))
    model = load_model(small_dir)
    gguf, course_files = tmp_path / "small-bf16.gguf", ratios.checkpoint_files(small_dir)
    args = SimpleNamespace(prompt=3, gen=2, depth=0, repetitions=2, reads=1, read_mib=8, products=1, product_size=8)
    rates, products = iter([2e9, 3e9, 4e9, 5e9]), iter([50e9, 70e9, 80e9, 90e9])
    monkeypatch.setattr(ratios, "read_rate", lambda threads, reads, size: events.append(("rate",)) or next(rates))
    monkeypatch.setattr(ratios, "product_rate",
                        lambda threads, count, size: events.append(("product",)) or next(products))
    rows = ratios.measure(model, gguf, tmp_path, args, [1], compete=course_files)
    assert events == [("drop", "small-bf16.gguf"), ("course", 2), ("course", 2)] + 2 * [
        ("rate",), ("product",), ("drop", "small-bf16.gguf"), ("course", 1), ("course", 2),
        ("drop", "consolidated.00.pth"), ("rate",), ("product",), ("llama.cpp",)]
    assert [peer for _, _, peer, _, _ in rows] == [[(1.0, 10.0), (1.0, 10.0)]]
    # the rates measured before each turn: the course's, then llama.cpp's, taking turns
    assert [(mine, theirs) for _, _, _, mine, theirs in rows] == [([(2e9, 50e9), (4e9, 80e9)],
                                                                   [(3e9, 70e9), (5e9, 90e9)])]
    printed = capsys.readouterr().out
    assert "before the course's turns: read rate 3.0 (2.0-4.0) GB/s, float32 product rate 65 (50-80) GFLOPS" in printed
    assert "before llama.cpp's turns: read rate 4.0 (3.0-5.0) GB/s, float32 product rate 80 (70-90) GFLOPS" in printed
    assert "page cache: 100% of the course's checkpoint at the start of its timed turns, 50% of llama.cpp's file " \
           "at the end of its turns (lowest)" in printed
    events.clear()  # where they fit, nothing is dropped and no line is printed
    rates, products = iter([2e9, 3e9, 4e9, 5e9]), iter([50e9, 70e9, 80e9, 90e9])
    ratios.measure(model, gguf, tmp_path, args, [1])
    assert not [e for e in events if e[0] == "drop"] and "page cache" not in capsys.readouterr().out


def test_the_ratios_turns_of_each_weight_type_start_with_every_other_file_of_the_run_out_of_the_page_cache(
        small_dir, tmp_path, capsys, monkeypatch):
    """A GGUF file written or measured earlier in the run (the Q8_0 copy, just quantised, while bf16 is measured)
    is taken out of the page cache before the turns that do not read it, so that what the kernel evicts for the
    two files measured is not left to chance (the 8B's checkpoint and its Q8_0 copy come to 24.6 GB); a model's
    files leave once it is measured."""
    ratios = load_script("bench/ratios.py")
    bin_dir = tmp_path / "build" / "bin"
    bin_dir.mkdir(parents=True)
    for program in ratios.llama_cpp.PROGRAMS:
        (bin_dir / program).touch()
    files = {"bf16": tmp_path / "small-bf16.gguf", "int8": tmp_path / "small-q8_0.gguf"}
    events = []
    monkeypatch.setattr(ratios, "gguf_files", lambda *args: files)
    monkeypatch.setattr(ratios, "drop_from_page_cache", lambda path: events.append(("drop", path.name)))
    monkeypatch.setattr(ratios, "files_compete", lambda *args: False)
    turn = [(1, [(1.0, 10.0)], [(1.0, 10.0)], [(2e9, 5e10)], [(2e9, 5e10)])]
    monkeypatch.setattr(ratios, "measure", lambda model, gguf, *args: events.append(("measure", gguf.name)) or turn)
    ratios.main([str(small_dir), "--work", str(tmp_path), "--threads", "1", "--types", "bf16,int8", "--reads", "1",
                 "--read-mib", "8", "--products", "1", "--product-size", "64"])
    assert events == [("drop", "small-q8_0.gguf"), ("measure", "small-bf16.gguf"), ("drop", "small-bf16.gguf"),
                      ("measure", "small-q8_0.gguf"), ("drop", "consolidated.00.pth"), ("drop", "small-bf16.gguf"),
                      ("drop", "small-q8_0.gguf")]
    assert "| small (2 layers, dim 64) | bf16 | 1 | decode 32 (tokens/s) |" in capsys.readouterr().out


def test_the_ratios_files_compete_when_they_and_the_process_exceed_nine_tenths_of_memory(tmp_path, monkeypatch):
    ratios = load_script("bench/ratios.py")
    course, gguf = tmp_path / "consolidated.00.pth", tmp_path / "m.gguf"
    course.write_bytes(b"x" * 3000)
    gguf.write_bytes(b"x" * 4000)
    monkeypatch.setattr(ratios.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 1000, "SC_PHYS_PAGES": 10}[name])
    monkeypatch.setattr(ratios.fit, "status_kib", lambda pid, key: 3)  # 3072 bytes of anonymous memory
    assert ratios.files_compete([course], gguf)  # 3000 + 4000 + 3072 > 0.9 * 10000
    monkeypatch.setattr(ratios.fit, "status_kib", lambda pid, key: 1)
    assert not ratios.files_compete([course], gguf)  # 3000 + 4000 + 1024 < 9000
    assert not ratios.files_compete([course], None)  # no llama.cpp


def test_the_ratios_limit_of_each_turn_takes_the_rates_measured_before_it(capsys):
    """1 GB a token: 10 tokens/s at 2 GB/s and 20 at 4 GB/s are both 5 times the limit. A prompt of 100 GFLOP
    in 1 second, at 50 and 200 GFLOPS: 2 and 0.5 times its limit. llama.cpp's turns take the rates measured
    before them: 1 GB/s and 100 GFLOPS, so its 2-second prompt is 0.5 of its limit and 5 tokens/s is 5."""
    ratios = load_script("bench/ratios.py")
    args = SimpleNamespace(prompt=17, gen=32, depth=0)
    course_rates, peer_rates = [(2e9, 50e9), (4e9, 200e9)], [(1e9, 100e9), (1e9, 100e9)]
    ratios.print_rows("m", "bf16", [(2, [(1.0, 10.0), (1.0, 20.0)], [(2.0, 5.0), (2.0, 5.0)], course_rates,
                                     peer_rates)], 1e9, 1e9, 100e9, args)
    prefill, decode = [line.rstrip(" |") for line in capsys.readouterr().out.splitlines()]
    assert prefill.split(" | ")[7:9] == ["1.25 (0.50-2.00)", "0.50 (0.50-0.50)"]
    assert decode.split(" | ")[7:9] == ["5.00 (5.00-5.00)", "5.00 (5.00-5.00)"]
