"""The course against llama.cpp and against the machine's limits, in one run, on the same checkpoints.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-1b --shape 3.2-1b
    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b --shape 3-8b
    .venv/bin/python bench/ratios.py /tmp/llama3-1b /tmp/llama3-8b

For each checkpoint folder, each weight type (bf16; int8 against llama.cpp's Q8_0; and int8x8, int8
with the activations rounded to int8 as well, `quantize_model(model, activations="int8")`, which is
Q8_0's own arithmetic, against Q8_0 again) and each
thread count (1 and 2; 4 where the machine has 4 cores), it times a prompt of --prompt tokens (17,
the classic prompt's length) and --gen tokens decoded one at a time (32), the course and llama.cpp
taking turns, --repetitions times (with --apart, llama.cpp's turns all come first, before the course
quantises: int8 with rounded activations holds a second, packed copy of its numbers, and on a 24 GB
machine the 8B's two copies and llama.cpp's 8.5 GB file do not fit in memory together). Each pair of
turns gives a ratio, course over llama.cpp; the table shows their median and their spread (lowest to
highest). The prompt's logits are the last position's alone (`forward(..., last_only=True)`), as
llama.cpp's are. With --depth N, both the prompt and the decoding come after N positions already in the
cache (llama-bench's -d N; the course fills its cache untimed): attention's share of a token grows with them.

Where the course's checkpoint, llama.cpp's file and the course's own memory exceed 90% of the machine's
(the 8B's two 16 GB files on a 24 or 30 GB machine), each side's turn starts with the other side's file taken
out of the page cache, so that its warm-up reads its own file back whole from disk; a line then says how
much of each file was cached at its turns.

The memory-read limit: the same run reads a large tensor through torch (the best of --reads passes of
a float32 `sum`, a float32 `amax` and a bfloat16 `sum`, the fastest full reads PyTorch gave here, at
each thread count), once at the start and again before each turn of each side, since a shared host's rate
can move during a run; the weights a decoded token must read, divided by the rate measured before the turn, is
the shortest time a token can take. Each decoding speed is printed as a fraction of it.

A prompt is bound by arithmetic rather than by memory (17 products for each weight read), so its limit is
another: the same run times a float32 product of two --product-size × --product-size matrices by `@` (the
best of --products), the kind of product PyTorch's libraries make fastest, at the start and before each
turn of each side; the prompt's multiply-adds in the matrices (every layer's for each token, the output
layer's for the last one), at that rate, is the time the prompt would take if all its products ran as fast
in float32. Each prompt time is printed as a fraction of it. This is not the CPU's peak: the square
product's rate moves with what other machines on a shared host do to the caches, and llama.cpp's own kernels
(which also round the activations, to bf16 or to 8 bits, and multiply in narrower numbers where the CPU has
instructions for them) can go past 1.

llama.cpp comes from bench/llama_cpp.py: its build in --work is reused (this script never builds),
and its GGUF files are reused or written there. Without a build, the course's side is printed alone,
with the command that makes one. No figure here is a test: speeds depend on the machine and its load.
"""

import argparse
import ctypes
import datetime
import importlib.util
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers import KVCache, forward, kernels, load_model, quantize_model, weight_bytes
from helpers.int8 import Int8Weight
from helpers.params import is_matrix

HERE = Path(__file__).resolve().parent
PROMPT = "the answer to the ultimate question of life, the universe, and everything is "


def bench_module(name):
    """A sibling script of bench/ imported as a module (bench/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


llama_cpp = bench_module("llama_cpp")
fit = bench_module("fit")
say = llama_cpp.say


def product_rate(threads, products=5, size=2048):
    """The rate of a large float32 product through torch now, in floating-point operations a second with `threads`
    threads: the best of `products` products of two `size` × `size` float32 matrices by `@`."""
    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    a @ a  # its first call
    best = float("inf")
    for _ in range(products):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def prompt_operations(model, length):
    """Floating-point operations of a prompt of `length` tokens in the matrices: a multiply and an add for each
    weight of every layer's matrices, for each token, and of the output layer for the last token alone."""
    numbers = {name: w.numel() for name, w in model.weights.items() if is_matrix(name)}
    return 2 * (length * (sum(numbers.values()) - numbers["output.weight"]) + numbers["output.weight"])


def read_rate(threads, reads=5, size=1 << 30):
    """The machine's read rate in bytes/s with `threads` threads: the best of `reads` passes of each of
    PyTorch's fastest full reads found here (float32 sum and amax, bfloat16 sum) over `size` bytes."""
    torch.set_num_threads(threads)
    data = torch.ones(size // 4)
    probes = [data.sum, data.amax, data.view(torch.bfloat16).sum]
    best = float("inf")
    for probe in probes:
        probe()  # its first pass, for each
        for _ in range(reads):
            started = time.perf_counter()
            probe()
            best = min(best, time.perf_counter() - started)
    return size / best


# ---------------------------------------------------------------------------
# The page cache. Where the course's checkpoint and llama.cpp's file do not fit in memory together (the 8B's
# two 16 GB files on a 24 GB machine), each side's reads push the other's file out, and a side's warm-up run
# does not bring all of its own back: Linux keeps the pages read many times (the other side's) and drops the
# ones just read first. Each side's turn then starts with the other's file taken out of the page cache.
# ---------------------------------------------------------------------------

MADV_PAGEOUT = 21  # madvise: reclaim these pages now (Linux 5.4 and later)
_libc = ctypes.CDLL(None, use_errno=True)


def checkpoint_files(model_dir):
    """The course's weight files in `model_dir` (Meta's .pth, or Hugging Face's .safetensors)."""
    return sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".pth", ".safetensors"))


def mapped_ranges(path):
    """(start, end) addresses of this process's mappings of `path` (the course maps its checkpoint)."""
    real = str(Path(path).resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == real:
            start, end = (int(address, 16) for address in fields[0].split("-"))
            yield start, end


def drop_from_page_cache(path):
    """Take `path`'s pages out of the page cache: those this process maps paged out first (madvise), then
    the rest dropped (posix_fadvise). The files are only read, so nothing is written back; where Linux
    declines (an older kernel, a file system that keeps its pages), they stay, and `cached_share` says so."""
    for start, end in mapped_ranges(path):
        _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_share(path):
    """The fraction of `path`'s pages in the page cache (mincore on a mapping of it that reads nothing)."""
    size = Path(path).stat().st_size
    if size == 0:
        return 1.0
    pages = -(-size // mmap.PAGESIZE)
    flags = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapping:
        start = ctypes.c_char.from_buffer(mapping)
        failed = _libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), flags)
        del start  # the mapping cannot close while a ctypes object points into it
    if failed:
        raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
    return (pages - bytes(flags).count(0)) / pages


def files_compete(course_files, gguf):
    """Whether the course's files, llama.cpp's and this process's own memory exceed 90% of the machine's."""
    if gguf is None:
        return False
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    anon = (fit.status_kib("self", "RssAnon") or 0) * 1024
    return sum(f.stat().st_size for f in course_files) + Path(gguf).stat().st_size + anon > 0.9 * total


def prompt_tokens(model, length):
    """`length` token ids: the classic prompt's, repeated or cut to length."""
    ids = model.tokenizer.encode(PROMPT) if model.tokenizer is not None else [128000]
    return (ids * (length // len(ids) + 1))[:length]


@torch.inference_mode()
def course_run(model, tokens, gen, depth=0):
    """(prefill seconds, decode tokens/s): one forward of `tokens`, then `gen` tokens one at a time; with
    `depth`, both after that many positions already in the cache (filled untimed)."""
    cache = KVCache(model.params, depth + len(tokens) + gen)
    if depth:
        forward(model, prompt_tokens(model, depth), cache, last_only=True)
    started = time.perf_counter()
    logits = forward(model, tokens, cache, last_only=True)
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(gen):
        logits = forward(model, [int(logits[-1].argmax())], cache, last_only=True)
    return prefill, gen / (time.perf_counter() - started)


def llama_cpp_run(bin_dir, gguf, prompt, gen, threads, depth=0):
    """(prefill seconds, decode tokens/s) of one llama-bench run of each; None for a run that failed."""
    pp = llama_cpp.llama_bench(bin_dir, gguf, prompt, 0, threads, 1, depth=depth)
    tg = llama_cpp.llama_bench(bin_dir, gguf, 0, gen, threads, 1, depth=depth)
    return (pp["avg_ns"] / 1e9 if isinstance(pp, dict) else None,
            tg["avg_ts"] if isinstance(tg, dict) else None)


def gguf_files(bin_dir, model_dir, work, types):
    """The BF16 and Q8_0 GGUF files of `model_dir` in work/gguf, written where missing."""
    gguf_dir = work / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(model_dir).resolve().name
    files = {"bf16": gguf_dir / f"{stem}-bf16.gguf", "int8": gguf_dir / f"{stem}-q8_0.gguf"}
    if not files["bf16"].is_file():
        say(f"Writing {files['bf16']} ...")
        llama_cpp.write_gguf(model_dir, files["bf16"], llama_cpp.import_gguf(), name=stem)
    if {"int8", "int8x8"} & set(types) and not files["int8"].is_file():
        say(f"Quantising to {files['int8']} ...")
        params = llama_cpp.load_params(model_dir)
        llama_cpp.quantize(bin_dir, files["bf16"], files["int8"], llama_cpp.params_weights(params), 15)
    return files


def spread(values, fmt):
    """'median (lowest to highest)' of the values that exist, or '-'."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    middle = fmt.format(statistics.median(values))
    return middle if len(values) == 1 else f"{middle} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def machine_rates(threads, args):
    """(read rate in bytes/s, float32 product rate in operations/s) with `threads` threads, measured now."""
    return (read_rate(threads, args.reads, args.read_mib << 20),
            product_rate(threads, args.products, args.product_size))


def peer_turn(bin_dir, gguf, args, threads, compete):
    """One llama.cpp turn: ((prefill, decode), share of its file cached after it, the machine's rates measured
    before it). Where the course's files `compete` with llama.cpp's for memory, they are first taken out of the
    page cache (share None otherwise)."""
    for path in compete:
        drop_from_page_cache(path)
    rates = machine_rates(threads, args)
    result = llama_cpp_run(bin_dir, gguf, args.prompt, args.gen, threads, args.depth)
    return result, cached_share(gguf) if compete else None, rates


def peer_turns(bin_dir, gguf, args, threads, compete):
    """llama.cpp's turns alone, for each thread count (--apart): {threads: [peer_turn(...), ...]}."""
    return {n: [peer_turn(bin_dir, gguf, args, n, compete) for _ in range(args.repetitions)] for n in threads}


def measure(model, gguf, bin_dir, args, threads, peer_done=None, compete=()):
    """The table's rows for one model and weight type, the course and llama.cpp taking turns (or with
    llama.cpp's turns already taken, `peer_done`): (threads, course's results, llama.cpp's, the rates measured
    before each of the course's turns, before each of llama.cpp's). Where the course's files `compete` with
    llama.cpp's for memory, each side's turn starts with the other's file out of the page cache, and a line says
    how much of each side's file was cached at its turns."""
    tokens = prompt_tokens(model, args.prompt)
    rows, course_cached = [], []
    from_file = not isinstance(model.layer(0)["wq"], Int8Weight)  # int8 matrices are in memory, not in the file
    taking_turns = bin_dir is not None and peer_done is None
    peers = {n: list((peer_done or {}).get(n, [])) for n in threads}
    for n in threads:
        torch.set_num_threads(n)
        if compete:
            drop_from_page_cache(gguf)
        course_run(model, tokens, 2)  # warm-up: pages mapped, compiled kernels asked for ...
        kernels.wait()
        course_run(model, tokens, 2)  # ... and loaded
        course, course_rates = [], []  # the rates before each turn: a shared host's move during a run
        for _ in range(args.repetitions):
            course_rates.append(machine_rates(n, args))  # before the warm-up: the read probe's memory is freed
            torch.set_num_threads(n)
            if taking_turns:  # llama.cpp's files may have pushed the course's out of the page cache:
                if compete:
                    drop_from_page_cache(gguf)
                course_run(model, tokens, 1)  # read them back untimed, as llama-bench's own warm-up run does
            if compete and from_file:
                course_cached.append(min(cached_share(path) for path in compete))
            course.append(course_run(model, tokens, args.gen, args.depth))
            if taking_turns:
                peers[n].append(peer_turn(bin_dir, gguf, args, n, compete))
        rows.append((n, course, [result for result, _, _ in peers[n]], course_rates, [r for _, _, r in peers[n]]))
    for side, at in (("the course's", 3), ("llama.cpp's", 4)):
        rates = [rate for row in rows for rate in row[at]]
        if rates:
            say(f"  before {side} turns: read rate {spread([r / 1e9 for r, _ in rates], '{:.1f}')} GB/s, float32 "
                f"product rate {spread([p / 1e9 for _, p in rates], '{:.0f}')} GFLOPS")
    if compete:
        course_share = f"{min(course_cached):.0%} of the course's checkpoint at the start of its timed turns, " \
            if from_file else ""
        peer_cached = [share for n in threads for _, share, _ in peers[n]]
        say(f"  page cache: {course_share}{min(peer_cached):.0%} of llama.cpp's file at the end of its turns "
            "(lowest)")
    return rows


def of_limit(results, rates, i, weight_bytes, operations):
    """Each result as a fraction of its limit at the rates measured before its turn: for a prompt (i = 0, a time),
    its operations at the product rate; for decoding (a speed), the weights read once at the read rate."""
    return [None if r is None else operations / product / r if i == 0 else r / (read / weight_bytes)
            for r, (read, product) in zip(results, rates, strict=False)]


def print_rows(label, kind, rows, course_bytes, peer_bytes, operations, args):
    for n, course, peer, course_rates, peer_rates in rows:
        after = f" after {args.depth}" if args.depth else ""
        for i, (what, unit, fmt) in enumerate([(f"prefill {args.prompt}{after}", "s", "{:.2f}"),
                                               (f"decode {args.gen}{after}", "tokens/s", "{:.2f}")]):
            mine = [c[i] for c in course]
            theirs = [p[i] for p in peer]
            ratios = [None if t is None else (t / m if i == 0 else m / t) for m, t in zip(mine, theirs, strict=False)]
            say(f"| {label} | {kind} | {n} | {what} ({unit}) | {spread(mine, fmt)} | "
                f"{spread(theirs, fmt) if peer else 'not built'} | {spread(ratios, '{:.2f}')} | "
                f"{spread(of_limit(mine, course_rates, i, course_bytes, operations), '{:.2f}')} | "
                f"{spread(of_limit(theirs, peer_rates, i, peer_bytes, operations), '{:.2f}')} |")


def commit():
    """The commit measured, and whether tracked files were changed since (then it is not the code measured)."""
    try:
        git = ["git", "-C", str(HERE)]
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        changed = subprocess.run(git + ["diff", "--quiet", "HEAD"], capture_output=True).returncode != 0
        return head.stdout.strip() + (" with uncommitted changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+", help="Meta Llama 3 folders (synthetic ones of real shapes will do)")
    parser.add_argument("--types", default="bf16,int8,int8x8",
                        help="bf16, int8 and/or int8x8 (int8 activations too; both against llama.cpp's Q8_0)")
    default_threads = "1,2,4" if (os.cpu_count() or 1) >= 4 else "1,2"
    parser.add_argument("--threads", default=default_threads, help=f"thread counts (default {default_threads})")
    parser.add_argument("--prompt", type=int, default=17, help="prompt tokens (default 17)")
    parser.add_argument("--gen", type=int, default=32, help="tokens decoded one at a time (default 32)")
    parser.add_argument("--depth", type=int, default=0,
                        help="positions already in the cache before the prompt and the decoding (default 0; "
                             "llama-bench's -d)")
    parser.add_argument("--repetitions", type=int, default=3, help="turns of each side (default 3)")
    parser.add_argument("--reads", type=int, default=5, help="reads to measure the read rate (default 5)")
    parser.add_argument("--read-mib", type=int, default=1024,
                        help="MiB each read takes, far more than the CPU's caches (default 1024)")
    parser.add_argument("--products", type=int, default=5,
                        help="float32 products to measure the product rate (default 5)")
    parser.add_argument("--product-size", type=int, default=2048,
                        help="rows and columns of the square matrices multiplied (default 2048)")
    parser.add_argument("--apart", action="store_true",
                        help="llama.cpp's turns first, before the course quantises: for a machine whose memory "
                             "cannot hold the course's int8 model and llama.cpp's file at once")
    parser.add_argument("--work", type=Path, default=llama_cpp.DEFAULT_WORK,
                        help=f"bench/llama_cpp.py's build and GGUF folder (default {llama_cpp.DEFAULT_WORK})")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not types or set(types) - {"bf16", "int8", "int8x8"}:
        parser.error(f"--types takes bf16, int8 and int8x8, not {args.types!r}")

    say(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, torch {torch.__version__}")
    say(f"Machine: {llama_cpp.machine()}")
    say(f"Load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 minutes)")
    bin_dir = args.work / "build" / "bin"
    if not all((bin_dir / program).is_file() for program in llama_cpp.PROGRAMS):
        say(f"llama.cpp is not built in {bin_dir}: the course's side alone. To build it (5 to 60 minutes), run "
            f"`.venv/bin/python bench/llama_cpp.py DIR --work {args.work}` once.")
        bin_dir = None
    rates = {n: read_rate(n, args.reads, args.read_mib << 20) for n in threads}
    measured = ", ".join(f"{rates[n] / 1e9:.1f} GB/s with {n} thread{'s' * (n > 1)}" for n in threads)
    say(f"Read rate (best of {args.reads} passes of float32 sum and amax and bfloat16 sum over {args.read_mib} MiB "
        f"through torch): {measured}")
    products = {n: product_rate(n, args.products, args.product_size) for n in threads}
    measured = ", ".join(f"{products[n] / 1e9:.0f} GFLOPS with {n} thread{'s' * (n > 1)}" for n in threads)
    say(f"Float32 product rate (best of {args.products} products of two {args.product_size} × {args.product_size} "
        f"matrices by @): {measured}")

    table = []
    for model_dir in args.model_dirs:
        files = gguf_files(bin_dir, model_dir, args.work, types) if bin_dir else {}
        model = load_model(model_dir, verbose=False)
        label = f"{Path(model_dir).name} ({model.params.n_layers} layers, dim {model.params.dim})"
        for kind in types:
            gguf = files.get("bf16" if kind == "bf16" else "int8")
            for other in set(files.values()) - {gguf}:  # written or measured before, not read in these turns:
                drop_from_page_cache(other)  # its pages would crowd out the pages of the two files measured
            compete = checkpoint_files(model_dir) if bin_dir and files_compete(checkpoint_files(model_dir), gguf) \
                else []
            if compete:
                say(f"The course's checkpoint and llama.cpp's {gguf.name} do not fit in memory together: each "
                    "side's turns start with the other's file out of the page cache, read back in its warm-up.")
            peer_done = peer_turns(bin_dir, gguf, args, threads, compete) if args.apart and bin_dir else None
            course_model = model if kind == "bf16" else \
                quantize_model(model, activations="int8" if kind == "int8x8" else "float32")
            # Bytes a decoded token reads: the matrices (llama.cpp's Q8_0: 34 bytes for 32 weights).
            course_bytes = weight_bytes(course_model)
            peer_bytes = weight_bytes(model) * (1 if kind == "bf16" else 34 / 64)
            anon = (fit.status_kib("self", "RssAnon") or 0) * 1024 / 1e9  # 0 off Linux
            say(f"Measuring {label}, {kind}: {course_bytes / 1e9:.2f} GB of matrices a token; the process holds "
                f"{anon:.2f} GB of anonymous memory ...")
            rows = measure(course_model, gguf, bin_dir, args, threads, peer_done, compete)
            table.append((label, {"bf16": "bf16", "int8": "int8 / Q8_0", "int8x8": "int8, x in int8 / Q8_0"}[kind],
                          rows, course_bytes, peer_bytes, prompt_operations(course_model, args.prompt)))
            del course_model
        del model
        for path in checkpoint_files(model_dir) + list(files.values()):  # done with: room for the next model's
            drop_from_page_cache(path)

    say()
    say(f"Course ÷ llama.cpp: speed over speed, above 1 where the course is faster (for the prompt, llama.cpp's time "
        f"over the course's); median of {args.repetitions} turns (lowest-highest). ÷ limit: the fraction reached of "
        "the float32 product limit for a prompt (its multiply-adds at the product rate), of the memory-read limit "
        "for decoding (the weights read once at the read rate).")
    say("| model | weights | threads | what | course | llama.cpp | course ÷ llama.cpp | course ÷ limit | "
        "llama.cpp ÷ limit |")
    say("|---|---|---|---|---|---|---|---|---|")
    for label, kind, rows, course_bytes, peer_bytes, operations in table:
        print_rows(label, kind, rows, course_bytes, peer_bytes, operations, args)


if __name__ == "__main__":
    sys.exit(main())
