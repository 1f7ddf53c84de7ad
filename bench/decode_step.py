"""Where one decoded token's time goes, matrix by matrix, on a real model's checkpoint.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3.2-1b-synthetic --shape 3.2-1b
    .venv/bin/python bench/decode_step.py /tmp/llama3.2-1b-synthetic [--bf16]

A decoded token multiplies every matrix of the model by one row: each layer's seven and the
output layer. With int8 weights (`helpers.quantize_model`, one scale per row; `--bf16` keeps the
checkpoint's bf16), each layer's wq, wk and wv are one matrix, and so are its w1 and w3: 4 products
a layer, not 7. This prints, each the median of --rounds runs:

- a whole decode step: `helpers.forward` of one token after a 17-token prompt, with a KV cache;
- the same step, taking turns with it, with every product by `kernels.one_row`'s whole path (its checks and
  bookkeeping, the row copied in inference mode) instead of its quick path for a matrix whose kernel already ran;
- the same matrix products alone, in the order a step makes them, through `helpers.linear` (the
  compiled one-row kernels of helpers/kernels.py): per matrix shape, calls per token, time per
  call and GB/s of weights read, then all of them;
- reading the same matrices in the same order with PyTorch's own row sums (`w.sum(-1)`, the
  int8 numbers taken as float32 words): the rate at which this machine streams these bytes
  when the arithmetic costs next to nothing;
- the same step with every product replaced by zeros of its shape: what is not a matrix product
  (norms, RoPE, attention, the cache, the checks); and taking turns with it, the same with a read of twice
  the CPU's last-level cache before each zero product, untimed, as a product's stream of weights leaves the
  caches: what those small operations use, PyTorch's own code and data among it, gone from them;
- the same step with each `linear` and `linear_each` call timed inside it, taking turns with the products
  alone: the products' time there against alone, and the rest (which the step without products counts
  short: it leaves out `linear`'s own Python, and its small operations find what they use still in the
  CPU's caches, which the products would not leave: the read before each zero product shows how much that is);
- one call of the same compiled kernel on a matrix of 8 rows: what a call costs beyond its
  arithmetic (Inductor's Python wrapper, starting the threads), and the same call through
  torch.compile's checks of its inputs, which helpers/kernels.py skips once a kernel is built;
- with --compare-parts 1,2,8, the compiled kernels alone on the same matrices, taking turns: as
  helpers has them (each matrix read as PARTS blocks of rows side by side, helpers/matvec.py) and
  read as each number of parts given (1: from top to bottom); this compiles five more kernels for
  each number first;
- with --compare-forms (or --compare-int8-forms), the compiled kernel alone on the same matrices, taking
  turns with its other form: reading the numbers from 32-bit words (int8 four at a time, bf16 two), or each
  one as it is (helpers/matvec.py; helpers/kernels.py's `words_for`: words for int8 in AVX2 code, each
  number in AVX-512 code; words for bf16 in AVX2 code alone);
- with --compare-columns, the compiled kernel alone on each shape whose rows are wider than 2 * COLUMNS
  numbers, taking turns: adding them up COLUMNS at a time, as helpers does (helpers/matvec.py's
  `in_columns`), and whole (not the int8 kernel's words, whose sums are a quarter as long);
- with --simdlen 256, all of it with the kernels compiled for 256-bit vectors: AVX2 code, as a CPU
  without AVX-512 gets, on a CPU that has it (and the int8 kernel in its AVX2 form, words).

The products and the row sums take turns round after round, so that both see the same machine.
A benchmark, not a test: the figures depend on the machine and on what else runs on it.
"""

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch._inductor.config

from helpers import KVCache, forward, kernels, linear, linear_each, load_model, matvec, quantize_int8, quantize_model
from helpers.check import PROMPT
from helpers.int8 import Int8Weight, weight_bytes, whole_of

# A layer's matrices, grouped as `linear_each` takes them.
LAYER_PRODUCTS = (("wq", "wk", "wv"), ("wo",), ("w1", "w3"), ("w2",))


def nbytes(w):
    return w.nbytes if isinstance(w, Int8Weight) else w.numel() * w.element_size()


def step_matrices(model):
    """The matrices one decoded token multiplies by, in the order it does; those joined (int8), as one."""
    matrices = []
    for i in range(model.params.n_layers):
        layer = model.layer(i)
        for group in LAYER_PRODUCTS:
            whole = whole_of([layer[name] for name in group])
            matrices += [layer[name] for name in group] if whole is None else [whole]
    return matrices + [model.weights["output.weight"]]


def parts_list(text):
    try:
        parts = [int(n) for n in text.split(",")]
    except ValueError:
        parts = []
    if not parts or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive whole numbers such as 1,2,8")
    return parts


@contextmanager
def products_replaced(product, product_each):
    """`linear` and `linear_each` replaced by `product` and `product_each` where the attention and the transformer
    block call them."""
    modules = [sys.modules["helpers.attention"], sys.modules["helpers.transformer"]]
    for module in modules:
        module.linear, module.linear_each = product, product_each
    try:
        yield
    finally:
        for module in modules:
            module.linear, module.linear_each = linear, linear_each


def products_timed(took):
    """The step's products as they are, each call's seconds added to `took[0]`."""
    def timed(product):
        def call(*args):
            start = time.perf_counter()
            try:
                return product(*args)
            finally:
                took[0] += time.perf_counter() - start
        return call

    return products_replaced(timed(linear), timed(linear_each))


def products_skipped(before=None):
    """The step's products replaced by zeros of each product's shape, each after a call of `before` if given."""
    def zeros(x, w):
        if before is not None:
            before()
        return x.new_zeros(*x.shape[:-1], w.shape[0])

    return products_replaced(zeros, lambda x, *ws: [zeros(x, w) for w in ws])


def last_cache_bytes():
    """The size of this CPU's last-level cache, as Linux reports it, or None."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = int((entry / "level").read_text()), (entry / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20}
        if size[-1:] in units and size[:-1].isdigit():
            sizes.append((level, int(size[:-1]) * units[size[-1]]))
    return max(sizes)[1] if sizes else None


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    kernels.BACKGROUND = False  # compiled in this process on first use: what is timed here is the kernels
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="a Llama 3 checkpoint folder (params.json, consolidated.00.pth)")
    parser.add_argument("--bf16", action="store_true", help="keep the bf16 weights instead of quantising to int8")
    parser.add_argument("--rounds", type=int, default=9, help="runs of each measurement (default 9)")
    parser.add_argument("--compare-parts", type=parts_list, default=[], metavar="N,N,...",
                        help=f"also time the kernels reading each matrix as N blocks of rows side by side, "
                             f"against helpers' {kernels.PARTS}")
    parser.add_argument("--compare-forms", "--compare-int8-forms", action="store_true",
                        help="also time the kernel in its other form (words or each number), taking turns")
    parser.add_argument("--compare-columns", action="store_true",
                        help="also time the kernel adding up wide rows whole, against helpers' blocks of columns")
    parser.add_argument("--simdlen", type=int, metavar="BITS",
                        help="compile the kernels for vectors of this many bits (256: AVX2 code on an AVX-512 CPU)")
    args = parser.parse_args(argv)
    if args.simdlen:
        torch._inductor.config.cpp.simdlen = args.simdlen
        kernels.INT8_WORDS = kernels.INT8_WORDS or args.simdlen < 512

    model = load_model(args.model_dir, verbose=False)
    if not args.bf16:
        model = quantize_model(model)
    kind = "bf16" if args.bf16 else "int8"
    matrices = step_matrices(model)
    assert sum(nbytes(w) for w in matrices) == weight_bytes(model)
    inputs = {w.shape[1]: torch.randn(1, w.shape[1]) for w in matrices}
    # The int8 numbers as float32 words, four to a word: PyTorch sums float32 rows at full speed.
    as_float = [w.values.view(torch.float32) if isinstance(w, Int8Weight) else w for w in matrices]
    calls = []  # (shape, seconds) of every product of every round

    def products():
        for w in matrices:
            start = time.perf_counter()
            linear(inputs[w.shape[1]], w)
            calls.append((tuple(w.shape), time.perf_counter() - start))

    def row_sums():
        for w in as_float:
            w.sum(-1)

    ids = model.tokenizer.encode_prompt(PROMPT)
    cache = KVCache(model.params, len(ids) + 5 * args.rounds + 2)
    # An 8-row matrix would take the block path in `linear`: the compiled kernel is called directly.
    small, small_x = torch.randn(8, matrices[0].shape[1]).to(torch.bfloat16), torch.randn(matrices[0].shape[1])
    with torch.inference_mode():
        # The kernels' rows made in inference mode, as `linear` makes them: torch.compile would compile
        # again for rows made outside it.
        kernel_args = kernels.kernel_inputs(small if args.bf16 else quantize_int8(small), small_x.clone())
        forward(model, ids, cache)
        forward(model, [ids[-1]], cache)  # builds the compiled kernels
        for _ in range(2):
            products()
            row_sums()
        calls.clear()

        def step(quick=True):
            if not quick:  # every product of this step by `one_row`'s whole path, which then remembers its matrix again
                kernels._quick.clear()
            return seconds(lambda: forward(model, [ids[-1]], cache))

        steps = [(step(), step(quick=False)) for _ in range(args.rounds)]
        step_s, whole_path_s = (statistics.median(column) for column in zip(*steps, strict=True))
        def timed_step():
            """(the step, its products) with each product timed inside it."""
            took = [0.0]
            with products_timed(took):
                return seconds(lambda: forward(model, [ids[-1]], cache)), took[0]

        rounds = [(seconds(products), seconds(row_sums), timed_step()) for _ in range(args.rounds)]
        # The step without products, and taking turns with it the same with the caches emptied before each product,
        # as the products leave them: a read of twice the last-level cache (or of 256 MiB), untimed, before each.
        evict_bytes = 2 * (last_cache_bytes() or 1 << 27)
        stream, reading = torch.ones(evict_bytes // 4), [0.0]

        def read_stream():
            reading[0] += seconds(stream.sum)

        def rest(before=None):
            reading[0] = 0.0
            with products_skipped(before):
                return seconds(lambda: forward(model, [ids[-1]], cache)) - reading[0]

        rests = [(rest(), rest(read_stream)) for _ in range(args.rounds)]
        rest_s, rest_cold_s = (statistics.median(column) for column in zip(*rests, strict=True))
        # The compiled kernel, if this model's matrices took it (not a model too small, nor without a compiler).
        built = {shape for shape, _, _ in kernels.compiled()}
        compiled = any(tuple(w.shape) in built for w in matrices) and kernels.kernel(int8=not args.bf16)
        if compiled:
            compiled(*kernel_args)
            call_s = statistics.median(seconds(lambda: [compiled(*kernel_args) for _ in range(100)])
                                       for _ in range(args.rounds)) / 100
            # The same code through torch.compile's checks of its inputs, which helpers' kernels skip once built.
            checked_s = statistics.median(seconds(lambda: [compiled.compiled(*kernel_args) for _ in range(100)])
                                          for _ in range(args.rounds)) / 100
        if compiled and args.compare_parts:
            kernel_inputs = [kernels.kernel_inputs(w, inputs[w.shape[1]].view(-1)) for w in matrices]
            # Every kernel of kernels.new_kernel, helpers' own included, runs the same function, for which
            # torch.compile keeps one list of what it compiled: 5 shapes for each number of parts.
            kernels.configure(recompiles=8 * (1 + len(args.compare_parts)))
            others = [compiled] + [kernels.new_kernel(not args.bf16, parts) for parts in args.compare_parts]

            def run(kernel):
                return lambda: [kernel(*each) for each in kernel_inputs]

            for kernel in others[1:]:
                run(kernel)()  # compiles
            by_parts = [[seconds(run(kernel)) for kernel in others] for _ in range(args.rounds)]
        if compiled and args.compare_forms:
            helpers_form, by_form = compare_forms(compiled, matrices, inputs, args.rounds, not args.bf16)
        columns = compiled and args.compare_columns and (args.bf16 or not kernels.int8_words())
        if columns:
            by_columns = compare_columns(compiled, matrices, inputs, args.rounds)

    products_s, sums_s = (statistics.median(round_[i] for round_ in rounds) for i in (0, 1))
    inside = [round_[2] for round_ in rounds]
    total_bytes = sum(nbytes(w) for w in matrices)
    p = model.params
    print(f"{args.model_dir}: dim {p.dim}, {p.n_layers} layers; {kind} matrices, {total_bytes / 1e9:.2f} GB read "
          f"per token in {len(matrices)} products; {torch.get_num_threads()} threads; median of {args.rounds} runs")
    print()
    print(f"{'matrix':>16} {'calls':>6} {'per call':>10} {'GB/s':>6} {'per token':>10}")
    by_shape = {}
    for shape, took in calls:
        by_shape.setdefault(shape, []).append(took)
    for shape, times in by_shape.items():
        count = len(times) // args.rounds
        per_call = statistics.median(times)
        size = nbytes(next(w for w in matrices if tuple(w.shape) == shape))
        print(f"{str(shape):>16} {count:>6} {per_call * 1e6:>7.0f} us {size / per_call / 1e9:>6.1f} "
              f"{count * per_call * 1e3:>7.1f} ms")
    print()
    print(f"decode step:                        {step_s * 1e3:6.1f} ms ({1 / step_s:.2f} tokens/s)")
    print(f"  its matrix products:              {products_s * 1e3:6.1f} ms ({total_bytes / products_s / 1e9:.1f} GB/s)")
    print(f"  the step without them:            {rest_s * 1e3:6.1f} ms")
    print(f"  the same, each zero product after a read of {evict_bytes >> 20} MiB (untimed) that leaves nothing of the "
          f"step in the caches: {rest_cold_s * 1e3:.1f} ms")
    timed_s, in_step_s = (statistics.median(column) for column in zip(*inside, strict=True))
    rest_in_step_s = statistics.median(step - products for step, products in inside)
    print(f"the step with its products timed inside it: {timed_s * 1e3:.1f} ms, {in_step_s * 1e3:.1f} ms of them in "
          f"products, {rest_in_step_s * 1e3:.1f} ms in the rest; round by round, the products inside it took "
          f"{statistics.median(round_[2][1] / round_[0] for round_ in rounds):.2f} times "
          "their time alone")
    print(f"the same bytes read by row sums:    {sums_s * 1e3:6.1f} ms ({total_bytes / sums_s / 1e9:.1f} GB/s)")
    if compiled:
        quick = statistics.median(a / b for a, b in steps)
        print(f"the step, each product by one_row's whole path: {whole_path_s * 1e3:.1f} ms; round by round, the "
              f"quick path for a matrix already seen takes {quick:.3f} of its time")
        print(f"one compiled call on 8 rows:        {call_s * 1e6:6.0f} us, {len(matrices)} calls a token: "
              f"{len(matrices) * call_s * 1e3:.1f} ms ({checked_s * 1e6:.0f} us through torch.compile's checks)")
    else:
        print("no compiled kernel: these matrices take the block path (see helpers/kernels.py)")
    if compiled and args.compare_parts:
        print()
        print("the kernels alone, each matrix read as N blocks of rows side by side:")
        for i, parts in enumerate([kernels.PARTS] + args.compare_parts):
            took = statistics.median(round_[i] for round_ in by_parts)
            line = f"  N = {parts:<3} {took * 1e3:6.1f} ms ({total_bytes / took / 1e9:4.1f} GB/s)"
            if i:
                ratio = statistics.median(round_[i] / round_[0] for round_ in by_parts)
                line += f"; round by round, {ratio:.2f} times the time of {kernels.PARTS} (helpers')"
            print(line)
    if compiled and args.compare_forms:
        print()
        print(f"the {kind} kernel alone, its numbers read:")
        for i, words in enumerate((bool(helpers_form), not helpers_form)):
            took = statistics.median(round_[i] for round_ in by_form)
            read = FORMS[kind] if words else "each one as it is"
            line = f"  {read:<30} {took * 1e3:6.1f} ms ({total_bytes / took / 1e9:4.1f} GB/s)"
            line += "; helpers' form here" if not i else \
                f"; round by round, {statistics.median(r[1] / r[0] for r in by_form):.2f} times the time of helpers'"
            print(line)

    if columns:
        print()
        print(f"the {kind} kernel alone on the matrices whose rows it adds up {matvec.COLUMNS} numbers at a time, "
              "and adding up their rows whole:")
        for shape, (calls, runs) in by_columns.items():
            blocks, whole = (statistics.median(round_[i] for round_ in runs) for i in (0, 1))
            ratio = statistics.median(round_[1] / round_[0] for round_ in runs)
            print(f"  {str(shape):>16} {calls:>3} calls: {blocks * 1e3:6.1f} ms in blocks, {whole * 1e3:6.1f} ms "
                  f"whole; round by round, whole rows took {ratio:.2f} times the time")
        if not by_columns:
            print(f"  none: no row here is wider than {2 * matvec.COLUMNS} numbers")
    elif args.compare_columns:
        print("\n--compare-columns: the int8 kernel here reads words, whose rows it adds up whole")


def compare_columns(compiled, matrices, inputs, rounds):
    """For each shape of `matrices` whose rows the kernel adds up in blocks of columns: how many, and the
    seconds of the kernel on them, that way and adding up the rows whole, round by round."""
    ways = {}  # shape -> (helpers' inputs, the rows whole)
    for w in matrices:
        x = inputs[w.shape[1]].view(-1)
        in_blocks, whole = ways.setdefault(tuple(w.shape), ([], []))
        in_blocks.append(kernels.kernel_inputs(w, x))
        columns, matvec.COLUMNS = matvec.COLUMNS, w.shape[1]  # no row wider than 2 * COLUMNS: each row whole
        try:
            whole.append(kernels.kernel_inputs(w, x.clone()))
        finally:
            matvec.COLUMNS = columns
    wide = {shape: each for shape, each in ways.items() if each[0][0][0].dim() == 3}
    for _, whole in wide.values():
        compiled(*whole[0])  # compiles
    return {shape: (len(each[0]), [[seconds(lambda e=e: [compiled(*a) for a in e]) for e in each]
                                   for _ in range(rounds)]) for shape, each in wide.items()}


FORMS = {"int8": "four at a time from 32-bit words", "bf16": "two at a time from 32-bit words"}


def compare_forms(compiled, matrices, inputs, rounds, int8):
    """helpers' form of the kernel here (`kernels.words_for`), and seconds of the kernel over `matrices` in that
    form and in the other (32-bit words, typed as helpers would type them here, or each number), round by round."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    helpers_form, words_for, runs = kernels.words_for(int8), kernels.words_for, []
    other = False if helpers_form else torch.float32 if str(pick_vec_isa()) == "avx2" else torch.int32
    try:
        for words in (helpers_form, other):
            kernels.words_for = lambda int8, words=words: words
            kernel = compiled if words is helpers_form else kernels.new_kernel(int8)
            each = [kernels.kernel_inputs(w, inputs[w.shape[1]].view(-1)) for w in matrices]
            runs.append(lambda kernel=kernel, each=each: [kernel(*arguments) for arguments in each])
            runs[-1]()  # compiles
    finally:
        kernels.words_for = words_for
    return helpers_form, [[seconds(run) for run in runs] for _ in range(rounds)]


if __name__ == "__main__":
    main()
