"""helpers.linear's two paths: bf16 blocks upcast into one buffer, and the compiled one-row kernel."""

import sys

import pytest
import torch

import helpers.compute
from helpers import FLOAT32_TOLERANCE, assert_close, kernels, linear
from helpers.int8 import onednn_here


def weights_and_row(rows=384, dim=256):
    g = torch.Generator().manual_seed(0)
    return torch.randn(rows, dim, generator=g).to(torch.bfloat16), torch.randn(1, dim, generator=g)


def kernel_linear(x, w):
    """linear(x, w) by the one-row kernel: asked for on a first call (which takes the block path), compiled in
    the background, then used."""
    linear(x, w)
    kernels.wait()
    return linear(x, w)


def test_one_row_takes_the_compiled_kernel_and_agrees(fresh_fused):
    w, x = weights_and_row()
    fused = kernel_linear(x, w)
    assert kernels.compiled() == {((384, 256), torch.bfloat16, torch.float32)}  # the kernel ran
    kernels.MIN_ELEMENTS = w.numel() + 1  # now the block path
    torch.testing.assert_close(fused, linear(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, x @ w.float().T, rtol=1e-5, atol=1e-5)
    assert fused.shape == (1, 384) and not fused.is_inference()
    fused += 1  # a caller outside inference mode gets a tensor it may change


def test_the_bf16_kernel_adds_up_wide_rows_in_blocks_of_columns(fresh_fused, monkeypatch):
    """Rows wider than 2 * COLUMNS numbers go to the kernel (each number as it is) as a view of blocks of columns,
    nothing copied, with the same result; rows not as wide go whole. (Two numbers to a word: the next test.)"""
    from helpers import matvec

    monkeypatch.setattr(kernels, "words_for", lambda int8: False)
    monkeypatch.setattr(matvec, "COLUMNS", 64)
    w, x = weights_and_row()
    blocks, row = kernels.kernel_inputs(w, x.view(-1))
    assert blocks.shape == (384, 4, 64) and row.shape == (4, 64) and blocks.data_ptr() == w.data_ptr()
    assert torch.equal(blocks[5, 2], w[5, 128:192]) and torch.equal(row.flatten(), x.view(-1))
    fused = kernel_linear(x, w)
    assert kernels.compiled() == {((384, 256), torch.bfloat16, torch.float32)}  # the kernel ran
    torch.testing.assert_close(fused, x @ w.float().T, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(matvec, "COLUMNS", 128)  # rows of 256: not wider than 2 * 128
    assert kernels.kernel_inputs(w, x.view(-1))[0] is w
    # A matrix whose kernel ran, its inputs now of another layout: not the code built for the first one.
    torch.testing.assert_close(linear(x, w), x @ w.float().T, rtol=1e-5, atol=1e-5)


def test_avx2_code_reads_bf16_numbers_two_to_a_float32_word_with_the_same_products(fresh_fused, monkeypatch):
    """In AVX2 code the bf16 kernel reads 32-bit words typed float32, a view of the matrix (the low half of word j
    is entry 2j), with x split into the entries each half multiplies; wide rows in blocks of columns of words.
    Its result is the product, as the kernel reading each number gives it."""
    import torch._inductor.config as inductor

    from helpers import matvec

    w, x = weights_and_row(dim=512)
    reference = x @ w.float().T
    with inductor.patch({"cpp.simdlen": 256}), torch.inference_mode():  # AVX2 code, on any x86 CPU with AVX2
        assert kernels.words_for(False) is torch.float32
        shifted = torch.empty(384 * 512 + 1, dtype=torch.bfloat16)[1:].view(384, 512)  # words would straddle two
        assert kernels.applies(x, w) and not kernels.applies(x, shifted) and not kernels.applies(x, w[:, :511])
        assert not kernels.applies(x[:, :384], w.T)  # not its own rows: the block path
        words, halves = kernels.kernel_inputs(w, x.view(-1))
        assert words.dtype is torch.float32 and words.shape == (384, 256) and words.data_ptr() == w.data_ptr()
        assert torch.equal(halves, torch.stack([x.view(-1)[0::2], x.view(-1)[1::2]]))
        as_words = kernels.new_kernel(False)(words, halves)
        monkeypatch.setattr(matvec, "COLUMNS", 64)  # 256 words a row: blocks of 64 numbers, 32 words
        blocks, block_halves = kernels.kernel_inputs(w, x.view(-1))
        assert blocks.shape == (384, 8, 32) and block_halves.shape == (2, 8, 32) and blocks.data_ptr() == w.data_ptr()
        in_blocks = kernels.new_kernel(False)(blocks, block_halves)
        monkeypatch.setattr(kernels, "words_for", lambda int8: False)  # the form that reads each number
        each = kernels.new_kernel(False)(*kernels.kernel_inputs(w, x.view(-1)))
    for out in (as_words, in_blocks, each):
        torch.testing.assert_close(out, reference.view(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_words, each, rtol=1e-5, atol=1e-5)


def test_without_a_compiler_the_block_path_takes_over(fresh_fused, monkeypatch):
    def cannot_build(*args, **kwargs):
        raise RuntimeError("no C++ compiler")
    monkeypatch.setattr(torch, "compile", lambda function, **options: cannot_build)
    w, x = weights_and_row()
    torch.testing.assert_close(kernel_linear(x, w), x @ w.float().T, rtol=1e-5, atol=1e-5)
    assert kernels.unavailable() == {"bf16"} and kernels.compiled() == set()


def test_a_machine_with_no_cpp_compiler_decodes_by_the_block_path(tiny, fresh_fused, monkeypatch):
    """No C++ compiler (here: CXX names none): no kernel is tried, and decoding gives the same tokens."""
    from helpers import generate

    prompt = "the answer to the ultimate question of life, the universe, and everything is "
    kernels.MIN_ELEMENTS = 1 << 40  # the block path alone
    expected = generate(tiny, prompt, 4, stop_ids=()).new_ids
    kernels.MIN_ELEMENTS = 0
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert kernels.cpp_compiler() is None
    assert generate(tiny, prompt, 4, stop_ids=()).new_ids == expected
    assert kernels.unavailable() == {"bf16"} and kernels.compiled() == set()


def test_the_first_row_takes_the_block_path_while_its_kernel_compiles_in_the_background(fresh_fused):
    w, x = weights_and_row(rows=176)  # a shape no other test compiles: no kernel for it is waiting
    first = linear(x, w)
    assert kernels.kernel(int8=False) is None and not kernels._shapes  # not compiled here, not waited for
    assert kernels.compiled() == {((176, 256), torch.bfloat16, torch.float32)}  # built in the background
    assert_close(linear(x, w), first)
    assert kernels._shapes == kernels.compiled()  # and now used


@pytest.fixture
def inductor():
    """Inductor's config, its settings the kernels change put back afterwards."""
    import torch._inductor.config as inductor

    saved = inductor.cpp.vec_isa_ok, inductor.cpp.dynamic_threads
    yield inductor
    inductor.cpp.vec_isa_ok, inductor.cpp.dynamic_threads = saved


def test_the_cpus_vector_instructions_come_from_aten_without_a_test_compile(inductor, monkeypatch):
    kernels.configure()
    known = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    assert inductor.cpp.vec_isa_ok is (True if known else None)
    assert inductor.cpp.dynamic_threads  # a kernel uses the threads torch has at each call
    monkeypatch.setattr(kernels, "OWN_ISA_CHECK", False)
    kernels.configure()
    assert inductor.cpp.vec_isa_ok is None  # Inductor's own check


def test_the_recompile_limit_is_raised_under_its_name_before_torch_2_7_too(inductor, monkeypatch):
    """torch 2.6 calls it cache_size_limit and has no recompile_limit: reading that raised, and no kernel was built."""
    import types

    old = types.SimpleNamespace(cache_size_limit=8)
    monkeypatch.setattr(torch._dynamo, "config", old)
    kernels.configure()
    assert old.cache_size_limit == 4 * kernels.MAX_SHAPES and not hasattr(old, "recompile_limit")
    monkeypatch.undo()
    before = torch._dynamo.config.cache_size_limit  # in 2.13 an alias of recompile_limit
    try:
        kernels.configure(recompiles=before + 1)
        assert torch._dynamo.config.cache_size_limit == before + 1
    finally:  # not by monkeypatch: torch 2.6's configuration hid a setting monkeypatch put back
        torch._dynamo.config.cache_size_limit = before


def test_a_cuda_build_of_torch_without_a_gpu_does_not_warn_in_the_notebooks(inductor, capfd):
    """A CUDA build of torch on a CPU (a Kaggle CPU session) logs "No CUDA runtime is found" when torch.compile
    imports torch.utils.cpp_extension; the notebooks' cells would show it."""
    import logging

    kernels.configure()
    logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    assert "CUDA" not in capfd.readouterr().err


def test_torch_2_6s_printed_warning_does_not_reach_the_notebooks_either(inductor, capfd, monkeypatch):
    """Torch 2.6 prints that warning to stderr, not by logging, as torch.utils.cpp_extension is imported: here an
    import of a stand-in that prints it, in place of the module already imported."""
    import importlib.abc
    import importlib.util

    import torch.utils.cpp_extension

    class PrintsAtImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            return importlib.util.spec_from_loader(name, self) if name == "torch.utils.cpp_extension" else None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            print("No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda'", file=sys.stderr)

    real = torch.utils.cpp_extension
    monkeypatch.setattr(torch.utils, "cpp_extension", real)  # put back after the test
    monkeypatch.delitem(sys.modules, "torch.utils.cpp_extension")
    monkeypatch.setattr(sys, "meta_path", [PrintsAtImport(), *sys.meta_path])
    kernels.configure()
    assert sys.modules["torch.utils.cpp_extension"] is not real  # the stand-in was imported
    assert "CUDA" not in capfd.readouterr().err


def test_where_compiling_with_the_own_check_fails_inductors_check_takes_over(inductor, monkeypatch):
    """A compiler that cannot build for the instructions ATen found: the kernel is built again with
    Inductor's own check of the CPU, and that check is kept."""
    monkeypatch.setattr(kernels, "OWN_ISA_CHECK", True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    tried = []

    def new_kernel(int8):
        kernels.configure()
        tried.append(inductor.cpp.vec_isa_ok)
        if inductor.cpp.vec_isa_ok:
            raise RuntimeError("cc1plus: error: unrecognized command-line option")
        return lambda *inputs: None

    monkeypatch.setattr(kernels, "new_kernel", new_kernel)
    spec = {"int8": False, "shape": [8, 16], "group": None, "words": None, "columns": None, "dtype": "bfloat16",
            "x": "float32", "threads": 1}
    assert kernels.warm(spec) and tried == [True, None] and kernels.OWN_ISA_CHECK is False
    tried.clear()
    monkeypatch.setattr(kernels, "new_kernel", lambda int8: 1 / 0)
    assert not kernels.warm(spec)  # nothing works: the block path


def test_the_int8_kernel_reads_words_wherever_inductor_checks_the_cpu_itself(monkeypatch):
    """Each int8 number as it is suits AVX-512 code only (ten times slower in AVX2 code), and Inductor's own
    check of the CPU, once in use, may choose narrower vectors than the AVX-512 ATen found."""
    monkeypatch.setattr(kernels, "INT8_WORDS", False)
    monkeypatch.setattr(kernels, "OWN_ISA_CHECK", True)
    assert not kernels.int8_words()
    monkeypatch.setattr(kernels, "OWN_ISA_CHECK", False)
    assert kernels.int8_words()


def test_past_the_shape_limit_new_shapes_take_the_block_path(fresh_fused, monkeypatch):
    monkeypatch.setattr(kernels, "MAX_SHAPES", 1)
    w, x = weights_and_row()
    kernel_linear(x, w)
    w2, x2 = weights_and_row(rows=128)
    torch.testing.assert_close(linear(x2, w2), x2 @ w2.float().T, rtol=1e-5, atol=1e-5)
    assert kernels.compiled() == {((384, 256), torch.bfloat16, torch.float32)}


def test_several_rows_take_the_block_path(fresh_fused):
    w, _ = weights_and_row()
    x = torch.randn(17, 256)
    assert_close(linear(x, w), x @ w.float().T)
    assert kernels.kernel(int8=False) is None and not kernels.compiled()  # never needed


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("int8", [False, True])
def test_the_block_path_by_onednn_or_by_at_gives_the_plain_product(fresh_fused, monkeypatch, onednn, int8):
    """A prompt's blocks go to oneDNN where torch has it, else to `@`: either way x @ w.float().T, in blocks
    that need not divide the rows, the last one short."""
    from helpers import quantize_int8

    assert onednn is False or onednn_here(), "oneDNN is not used on this machine: its path is not tested"
    monkeypatch.setattr(helpers.compute, "ONEDNN", onednn)
    monkeypatch.setattr(helpers.compute, "MIN_BLOCK_ROWS", 100)
    w, _ = weights_and_row(rows=1030, dim=1024)
    w = quantize_int8(w) if int8 else w
    x = torch.randn(17, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = linear(x, w)
    assert_close(out, x @ (w.dequantize() if int8 else w.float()).T)
    assert helpers.compute.ONEDNN is onednn  # not switched off by a failure


def test_a_float64_prompt_leaves_onednn_on(fresh_fused, monkeypatch):
    monkeypatch.setattr(helpers.compute, "ONEDNN", onednn_here())
    w, _ = weights_and_row()
    x = torch.randn(3, 256, dtype=torch.float64)
    torch.testing.assert_close(linear(x, w), x @ w.double().T)
    assert helpers.compute.ONEDNN is onednn_here()


def test_onednn_is_used_on_x86_alone(monkeypatch):
    """Measured faster on x86 only: on an Arm CPU, `@` and `torch._int_mm`, and no packed copies."""
    import platform

    from helpers.int8 import packed_for_prompts

    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert not onednn_here()
    assert packed_for_prompts(torch.zeros(4, 8, dtype=torch.int8)) is None
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert onednn_here() == torch.backends.mkldnn.is_available()


def test_where_onednn_fails_the_block_path_falls_back_to_at(fresh_fused, monkeypatch):
    class Refusing:
        def _linear_pointwise(self, *args):
            raise RuntimeError("no such operator")
    monkeypatch.setattr(helpers.compute, "ONEDNN", True)
    monkeypatch.setattr(torch.ops, "mkldnn", Refusing())
    w, _ = weights_and_row()
    x = torch.randn(5, 256)
    torch.testing.assert_close(linear(x, w), x @ w.float().T, rtol=1e-5, atol=1e-5)
    assert helpers.compute.ONEDNN is False


def test_assert_close_allows_rounding_and_refuses_mistakes(fresh_fused):
    """The course's one tolerance: the one-row kernel and the block path agree under it, a mistake does not."""
    w, x = weights_and_row(rows=4096, dim=4096)
    fused = kernel_linear(x, w)
    kernels.MIN_ELEMENTS = w.numel() + 1
    blocks = linear(x, w)
    assert not torch.equal(fused, blocks)  # another order of the same sums: the last bits differ...
    assert_close(fused, blocks)  # ...within the tolerance
    with pytest.raises(AssertionError):
        assert_close(fused * (1 + 10 * FLOAT32_TOLERANCE), blocks)  # a result off by a factor is not
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([0.0, 1.0]), torch.tensor([float("-inf"), 1.0]))  # a mask is exact
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([1, 2]), torch.tensor([1, 3]))  # so are integers



def takes_the_one_row_kernel(shape):
    """Whether one row times a bf16 matrix of `shape` has a compiled kernel (not run here)."""
    w = torch.empty(shape, dtype=torch.bfloat16)  # never written: no memory is touched
    return kernels.applies(torch.zeros(1, shape[1]), w)


@pytest.mark.parametrize("shape", [(512, 2048), (2048, 2048), (8192, 2048), (2048, 8192), (128256, 2048),
                                   (1024, 3072), (3072, 3072), (1024, 4096), (4096, 14336)])
def test_every_matrix_of_a_real_llama_3_takes_the_one_row_kernel(shape, monkeypatch):
    """From Llama 3.2 1B's smallest (its wk and wv, 512 x 2048) to the 8B's largest."""
    assert takes_the_one_row_kernel(shape)


@pytest.mark.parametrize("shape", [(64, 64), (16, 64), (224, 64), (64, 224), (128256, 64)])
def test_no_matrix_of_the_tiny_model_takes_it(shape, monkeypatch):
    """The tiny model's decoding is bound by overheads: compiling kernels for it would only cost time."""
    assert not takes_the_one_row_kernel(shape)


@pytest.mark.parametrize("int8", [False, True])
def test_a_row_made_in_or_out_of_inference_mode_takes_the_same_compiled_kernel(fresh_fused, int8):
    """torch.compile tells a tensor made in inference mode from one made outside: were the row handed over as
    it comes, each shape would be compiled twice, and a Llama 3's 5 shapes would pass torch.compile's limit
    of 8, past which it runs the kernel uncompiled."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from helpers import quantize_int8

    w, x = weights_and_row(rows=320)  # a shape no other test compiles
    w = quantize_int8(w) if int8 else w
    expected = kernel_linear(x, w)
    code = kernels.kernel(int8).compiled._torchdynamo_orig_callable
    compiled = len(_debug_get_cache_entry_list(code))
    with torch.inference_mode():
        made_inside = x.clone()
        assert_close(linear(made_inside, w), expected)
        assert_close(linear(x, w), expected)  # made outside, used inside
    assert len(_debug_get_cache_entry_list(code)) == compiled


def test_once_compiled_a_kernel_is_called_directly_for_the_same_layout_alone(fresh_fused, monkeypatch):
    """Each layout of inputs (shapes, strides, dtypes) is compiled through torch.compile once, then called without
    it; another layout goes through torch.compile again, and gets code of its own."""
    kernel = kernels.new_kernel(int8=False)
    w, x = weights_and_row(rows=288)
    with torch.inference_mode():
        first = kernel(*kernels.kernel_inputs(w, x.view(-1)))
        assert len(kernel.direct) == 1
        through_torch_compile = kernel.compiled
        monkeypatch.setattr(kernel, "compiled", None)  # a call that went through it would fail
        assert torch.equal(kernel(*kernels.kernel_inputs(w, x.view(-1))), first)
        monkeypatch.setattr(kernel, "compiled", through_torch_compile)
        wider, row = weights_and_row(rows=288, dim=320)
        assert_close(kernel(*kernels.kernel_inputs(wider, row.view(-1))), row.view(-1) @ wider.float().T)
        assert len(kernel.direct) == 2
        assert_close(first, x.view(-1) @ w.float().T)


@pytest.mark.parametrize("int8", [False, True])
def test_a_matrix_whose_kernel_ran_takes_the_quick_path_and_keeps_nothing_alive(fresh_fused, monkeypatch, int8):
    """From a matrix's second one-row product, `one_row` finds its kernel by the matrix alone, past the bookkeeping of
    shapes and compiling; it still asks whether the kernel applies. It holds the matrix by a weak reference only: a
    model that is let go is freed, and another matrix that gets its id is not taken for it."""
    import gc
    import weakref

    from helpers import dequantize, quantize_int8

    w, x = weights_and_row(rows=352)
    other = weights_and_row(rows=352)[0].flip(0).contiguous()
    w, other = (quantize_int8(w), other) if int8 else (w, quantize_int8(other))  # one of each kind
    first = kernel_linear(x, w)
    expected = x @ (other.float() if int8 else dequantize(other)).T
    assert id(w) in kernels._quick
    shapes = kernels._shapes
    monkeypatch.setattr(kernels, "_shapes", None)  # the bookkeeping: were it read, the product would fail
    again = linear(x, w)
    assert torch.equal(again, first) and not again.is_inference()
    again += 1  # a normal tensor, for a caller outside inference mode
    with torch.inference_mode():
        assert torch.equal(linear(x, w), first)
    monkeypatch.setattr(kernels, "_shapes", shapes)
    kernels._quick[id(other)] = kernels._quick[id(w)]  # as if `other` had been given w's id after w was freed
    assert_close(linear(x, other), expected)  # its own product, by its own kind of kernel
    kernel = kernels.kernel(int8)
    monkeypatch.setattr(kernel, "direct", {})
    monkeypatch.setattr(kernel, "compiled", None)  # the kernel would fail now
    kernels.MIN_ELEMENTS = w.numel() + 1
    assert_close(linear(x, w), first)  # no longer applies: the block path, even for a matrix it knows
    freed = weakref.ref(w)
    del w
    gc.collect()
    assert freed() is None


@pytest.mark.parametrize("rows", [257, 3])
@pytest.mark.parametrize("int8", [False, True])
def test_rows_that_do_not_divide_into_the_parts_still_come_out_whole_and_in_order(fresh_fused, int8, rows):
    """The kernels compute kernels.PARTS blocks of rows side by side. 257 rows leave the last block longer
    than the others, and 3 are fewer than the parts: every row must still come out once, in its place."""
    from helpers import dequantize, quantize_int8

    assert rows % kernels.PARTS and (rows > kernels.PARTS) == (rows == 257)
    w, x = weights_and_row(rows=rows)
    w = quantize_int8(w) if int8 else w
    out = kernel_linear(x, w)
    assert kernels._shapes and out.shape == (1, rows)  # the compiled kernel ran
    assert_close(out, x @ dequantize(w).T)
