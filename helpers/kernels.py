"""Compiled one-row kernels: a single row times a bf16 or int8 matrix, converting each weight in a register.

`one_row(x, w)` is `x @ w.T` for one row `x` by a kernel torch.compile generates, or None where none applies
(several rows, a matrix smaller than a real Llama 3's), where it is still being compiled (by a background process
that fills torch.compile's cache, while decoding goes on by the block path), or where it cannot be (no C++
compiler: never tried again). `wait()` waits for them, `compiled()` lists what was built, `reset()` forgets it.
What they compute is in helpers/matvec.py; docs/kernels.md gives the measurements behind these choices.
"""

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import weakref

import torch

from . import matvec as _matvec
from .int8 import Int8Weight
from .matvec import PARTS, in_columns, matvec, matvec_bf16_words, matvec_int8, matvec_int8_each

# Matrices of real Llama 3 models (width 2048 or more, the 1B's wk and wv 512 x 2048 the smallest) take
# the kernels; the tiny model's (64 or 224 wide), bound by overheads, do not.
MIN_ELEMENTS = 1 << 20
MIN_WIDTH = 1024
# torch.compile builds one kernel per matrix shape and thread count; past MAX_SHAPES shapes, None.
MAX_SHAPES = 8
# The int8 kernel is compiled with multiply-adds (FMA): it spends most of its time in arithmetic.
INT8_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}
# How the int8 kernel reads its numbers (`int8_words`): four at a time from 32-bit words (`matvec.matvec_int8`) in AVX2
# code; where ATen found AVX-512, each as it is (`matvec.matvec_int8_each`), which is ten times slower in AVX2 code.
INT8_WORDS = torch.backends.cpu.get_cpu_capability() != "AVX512"

# Compile in a background process (LLAMA3_COMPILE_IN_BACKGROUND=0: in the caller, on first use).
BACKGROUND = os.environ.get("LLAMA3_COMPILE_IN_BACKGROUND", "1") != "0"
# Tell Inductor the CPU's vector instructions as ATen found them, instead of its test compile (about 5 s).
OWN_ISA_CHECK = os.environ.get("LLAMA3_INDUCTOR_ISA_CHECK") != "1"

_kernels = {}  # False (bf16) or True (int8) -> its compiled kernel, or False where it cannot be built
_shapes = set()  # (matrix shape, its dtype or (torch.int8, group size), row dtype) of each shape built
_warmer = None  # the background process that fills the compile cache, and what it answered
_quick = {}  # id(matrix) -> (a weak reference to it, its words' dtype or False, its kernel): `one_row`'s quick path


def int8_words():
    """Whether the int8 kernel reads words: INT8_WORDS, or Inductor's own check of the CPU in use (it may pick AVX2)."""
    return INT8_WORDS or not OWN_ISA_CHECK


def words_for(int8):
    """The dtype of the words the int8 (or bf16) kernel reads its numbers from, or False where it reads each: int8
    where `int8_words()`, bf16 in AVX2 code alone; float32 in AVX2 code (ATen loads int32 via the stack), else int32."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    avx2 = str(pick_vec_isa()) == "avx2"
    return (int8_words() if int8 else avx2) and (torch.float32 if avx2 else torch.int32)


def configure(recompiles=4 * MAX_SHAPES):
    """Inductor's settings: as many threads as torch is given at each call, and with OWN_ISA_CHECK the CPU's vector
    instructions as ATen found them (AVX2 or AVX-512), without Inductor's test compile; else Inductor's own check.
    torch.compile may compile a function for at least `recompiles` layouts of its inputs."""
    import torch._inductor.config as inductor
    inductor.cpp.dynamic_threads = True  # else a kernel keeps the thread count it was compiled with
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found": a CUDA
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # build, no GPU; at this import, torch
        __import__("torch.utils.cpp_extension")  # 2.13 logs it and 2.6 prints it: not in a notebook's output
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"  # in 2.6
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), recompiles))
    known = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    inductor.cpp.vec_isa_ok = True if OWN_ISA_CHECK and known else None


def cpp_compiler():
    """The C++ compiler torch.compile would use (`CXX`, else g++), or None where there is none."""
    return shutil.which(os.environ.get("CXX") or "g++")


def new_kernel(int8, parts=PARTS):
    """A new one-row kernel for int8 (or bf16) weights reading `parts` blocks of rows; it takes `kernel_inputs`."""
    configure()
    words = words_for(int8)
    product = (matvec_int8 if words else matvec_int8_each) if int8 else (matvec_bf16_words if words else matvec)
    product = functools.partial(product, parts=parts) if parts != PARTS else product
    return _Compiled(product, INT8_OPTIONS if int8 else {})


class _Compiled:
    """`torch.compile(product)`, its code for each layout of inputs called directly once built (docs/kernels.md)."""
    def __init__(self, product, options):
        self.options, self.direct, self.built = options, {}, None
        self.compiled = torch.compile(product, dynamic=False, backend=self._backend)

    def _backend(self, graph, example_inputs):
        from torch._inductor.compile_fx import compile_fx
        self.built = compile_fx(graph, example_inputs, config_patches=self.options), [id(t) for t in example_inputs]
        return self.built[0]

    def __call__(self, *inputs):
        code = self.direct.get(layout(inputs))
        if code is not None:
            return code(*inputs)[0]
        self.built = None
        out = self.compiled(*inputs)
        if self.built is not None and self.built[1] == [id(t) for t in inputs]:
            self.direct[layout(inputs)] = self.built[0]  # compiled for these inputs, in this order
        return out


def layout(tensors):
    return tuple((t.shape, t.stride(), t.dtype) for t in tensors)


def kernel_inputs(w, x, words=None):
    """`w` and one row `x` (dim,) as the kernel takes them: as words typed `words` (by default `words_for`), x split
    by byte (int8: byte k of word j is entry 4j + k) or by half (bf16); else each number as it is. Wide rows in
    blocks of columns, but for int8 words."""
    int8 = isinstance(w, Int8Weight)
    words = words_for(int8) if words is None else words
    if not int8:
        return in_columns(w.view(words), x.view(-1, 2).T.contiguous(), per_number=2)[:2] if words else \
            in_columns(w, x)[:2]
    if words:
        return w.values.view(words), w.scales, x.view(-1, 4).T.contiguous()
    values, x, scales = in_columns(w.values, x, w.scales)
    return values, scales, x


def kernel(int8):
    """The compiled kernel for int8 (or bf16) weights; None before it, False where it cannot be."""
    return _kernels.get(int8)


def applies(x, w):
    """Whether `one_row` has a kernel for `x` times matrix `w`: one row, a real model's matrix size. Read as words,
    int8 numbers four to a word and bf16 ones two (a view of the matrix's own rows): all Llama 3 matrices allow it."""
    int8 = isinstance(w, Int8Weight)
    odd = w.group_size % 4 if int8 else w.shape[1] % 2 or w.storage_offset() % 2 or not w.is_contiguous()
    fits = x.numel() == x.shape[-1] and w.numel() >= MIN_ELEMENTS and w.shape[1] >= MIN_WIDTH
    return fits and not (odd and words_for(int8))


def _spec(w, x):
    """What the background process needs to compile a kernel for `w` and `x`: shapes, dtypes, threads."""
    int8, name = isinstance(w, Int8Weight), lambda dtype: str(dtype).removeprefix("torch.")
    return {"int8": int8, "shape": list(w.shape), "group": w.group_size if int8 else None,
            "words": INT8_WORDS if int8 else None, "columns": _matvec.COLUMNS,
            "dtype": None if int8 else name(w.dtype), "x": name(x.dtype), "threads": torch.get_num_threads()}


def warm(spec):
    """Compile the kernel for `spec` into torch.compile's cache, on uninitialised inputs of its shapes and dtypes;
    whether it worked. Failing with OWN_ISA_CHECK, it tries again with Inductor's own check, and keeps to that."""
    global OWN_ISA_CHECK, INT8_WORDS
    (rows, dim), x = spec["shape"], torch.empty(spec["shape"][1], dtype=getattr(torch, spec["x"]))
    w = Int8Weight(torch.empty(rows, dim, dtype=torch.int8), torch.empty(rows, dim // spec["group"])) \
        if spec["int8"] else torch.empty(rows, dim, dtype=getattr(torch, spec["dtype"]))
    torch.set_num_threads(spec["threads"])
    INT8_WORDS = INT8_WORDS if spec["words"] is None else spec["words"]
    _matvec.COLUMNS = spec["columns"] or _matvec.COLUMNS
    for own in dict.fromkeys((OWN_ISA_CHECK, False)):
        OWN_ISA_CHECK = own
        try:
            with torch.inference_mode():
                new_kernel(spec["int8"])(*kernel_inputs(w, x))
            return True
        except Exception:  # no C++ compiler, or a platform torch.compile does not support
            torch._dynamo.reset()
    return False


def warm_main():
    """The background process: compile each spec read from stdin, answer `{"key": ..., "ok": ...}` on stdout."""
    os.nice(5)
    for line in sys.stdin:
        ok = warm(json.loads(line))
        print(json.dumps({"key": line.strip(), "ok": ok, "own_isa_check": OWN_ISA_CHECK}), flush=True)


class _Warmer:
    """The background process and what it has answered (key -> ok); a thread reads its answers."""

    def __init__(self):
        self.answers, self.asked, self.shapes, self.done = {}, set(), {}, threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from helpers.kernels import warm_main; warm_main()"], text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            answer = json.loads(line)
            global OWN_ISA_CHECK
            OWN_ISA_CHECK = OWN_ISA_CHECK and answer["own_isa_check"]  # compile here as it compiled there
            with self.done:
                self.answers[answer["key"]] = answer["ok"]
                self.done.notify_all()
        with self.done:  # the process ended: what it did not answer will not be built
            self.answers.update({key: False for key in self.asked - self.answers.keys()})
            self.done.notify_all()

    def ask(self, key, shape):
        """The answer for `key` (True: in the cache, False: cannot be built), or None after asking for it."""
        if key not in self.asked:
            self.asked.add(key)
            self.shapes[key] = shape
            try:
                print(key, file=self.process.stdin, flush=True)
            except OSError:  # the process ended
                self.answers[key] = False
        return self.answers.get(key)


def one_row(x, w):
    """`x @ w.T` for one row `x` (..., dim) by a compiled kernel, in x's dtype; None where none applies yet."""
    global _warmer
    known = _quick.get(id(w))  # a matrix whose kernel ran before: its code, found by the inputs' layout
    if known is not None and known[0]() is w and applies(x, w):
        inputs = kernel_inputs(w, x.reshape(-1), known[1])
        code = known[2].direct.get(layout(inputs))
        if code is not None:
            return code(*inputs)[0].view(*x.shape[:-1], w.shape[0])
    if not applies(x, w):
        return None
    int8 = isinstance(w, Int8Weight)
    if _kernels.get(int8) is None and not cpp_compiler():
        _kernels[int8] = False  # no C++ compiler: the block path from now on
    fn = _kernels.get(int8)
    shape = (tuple(w.shape), (torch.int8, w.group_size) if int8 else w.dtype, x.dtype)
    built = sum(isinstance(s[1], tuple) == int8 for s in _shapes)
    if fn is False or (shape not in _shapes and built >= MAX_SHAPES):
        return None
    if shape not in _shapes and BACKGROUND:  # is the kernel in torch.compile's cache? (None: not yet, False: never)
        _warmer = _warmer or _Warmer()
        ready = _warmer.ask(json.dumps(_spec(w, x), sort_keys=True), shape)
        if not ready:
            _kernels[int8] = False if ready is False else fn
            return None
    try:
        fn = fn or new_kernel(int8)
        # In inference mode, on a row made in it, whatever mode the caller is in: as the background process compiles.
        outside = not torch.is_inference_mode_enabled()
        with torch.inference_mode():
            inputs = kernel_inputs(w, x.reshape(-1).clone(), words := words_for(int8))
            out = fn(*inputs)
    except Exception:  # no C++ compiler, or a platform torch.compile does not support
        fn, out = False, None
    _kernels[int8] = fn
    if out is None:
        return None
    _shapes.add(shape)
    if layout(inputs) in fn.direct:
        _quick[id(w)] = weakref.ref(w), words, fn
    out = out.clone() if outside else out  # a normal tensor for a caller outside inference mode
    return out.view(*x.shape[:-1], w.shape[0])


@contextlib.contextmanager
def sharing_cores():
    """One thread fewer while the background process compiles: a decoded token's block path then does not
    wait for a thread the compiler holds (with 2 threads on 2 busy cores, it ran many times slower)."""
    threads = torch.get_num_threads()
    if _warmer is not None and threads > 1 and not _warmer.asked <= _warmer.answers.keys():  # compiling
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def wait():
    """Wait until the background process has compiled every kernel asked for (the next use loads it)."""
    if _warmer is not None:
        with _warmer.done:
            _warmer.done.wait_for(lambda: _warmer.asked <= _warmer.answers.keys())


def compiled():
    """What `one_row` compiled or the background process built: {(matrix shape, dtype or (int8, group), row dtype)}."""
    wait()
    built = {_warmer.shapes[key] for key, ok in _warmer.answers.items() if ok} if _warmer else set()
    off = {int8 for int8, fn in _kernels.items() if fn is False}
    return _shapes | {shape for shape in built if isinstance(shape[1], tuple) not in off}


def unavailable():
    """The kernels that could not be built, as "bf16" and "int8"; `one_row` then returns None for them."""
    return {"int8" if int8 else "bf16" for int8, fn in _kernels.items() if fn is False}


def reset():
    """Forget the kernels, as if none had been used (tests, benchmarks); the background process and the cache stay."""
    wait()
    for known in (_kernels, _shapes, _quick, *((_warmer.asked, _warmer.answers, _warmer.shapes) if _warmer else ())):
        known.clear()
