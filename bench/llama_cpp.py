"""llama.cpp on this machine, on the same checkpoint as the course: the peer the README compares with.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-synthetic --shape 3-8b
    .venv/bin/python bench/llama_cpp.py /tmp/llama3-8b-synthetic

Not a test, and not part of `make test`: it builds C++ and reads gigabytes.
The folder can be any single-file Meta Llama 3 checkpoint (params.json,
consolidated.00.pth, and tokenizer.model or the copy in llama-models): a
synthetic one of a real model's shapes, or the real thing. In three steps:

1. Build. `pip download` fetches llama-cpp-python's source distribution
   (--llama-cpp-python, default LLAMA_CPP_PYTHON below) from PyPI into the
   work folder (--work, default /tmp/llama-cpp-bench); its vendor/llama.cpp
   is built with cmake (Release, CPU only, -DGGML_NATIVE=ON, no OpenSSL or
   curl, static), only the two programs used here: llama-bench and
   llama-quantize. Where cmake is missing, the `cmake` package from PyPI is
   installed into the work folder. The build runs under `nice -n 15`
   (--build-nice): 52 minutes here, on 2 cores that other work kept busy. A
   finished build in the work folder is reused, whatever the version asked
   for: delete WORK/build to build again.
2. Convert. The checkpoint is written as a BF16 GGUF by the gguf package
   (`pip install gguf`; else the gguf-py folder of the same source
   distribution), one tensor at a time from the memory-mapped checkpoint, so
   that the model is never held in memory. llama.cpp's own
   convert_hf_to_gguf.py reads Hugging Face's layout, not Meta's: the
   metadata and names are written here instead (see `gguf_name` and
   `write_gguf`). Meta's wq and wk go in unpermuted: Meta's RoPE rotates
   adjacent pairs, which is llama.cpp's layout for the llama architecture.
   Then llama-quantize makes a Q8_0 copy (8.5 bits a weight). Each file is
   written under a temporary name and renamed when complete; a complete one
   is reused. The disk's free space is checked first.
3. Measure. `llama-bench -m MODEL -p 17 -n 0 -t 2`, then `-p 0 -n 32`
   (--prompt, --gen, --threads), for each GGUF: the 17-token prompt is the
   course's classic prompt's length; 32 tokens are decoded one at a time.
   --repack 0 or 1 is handed to llama-bench (1, its default, rearranges Q8_0
   weights for the CPU's vector instructions). The two are run apart, so that
   one failing leaves the other's figure: llama.cpp 0c1e57098's repacked Q8_0
   crashed on the prompt on a 2-core Xeon with AVX-512 and AMX, while its
   decoding ran (use --repack 0 there for a prefill figure). Before each run the
   script waits (at most --wait seconds) for the 1-minute load average to fall
   below --max-load, and prints the load average the run started at: with 2
   threads on 2 cores, any other busy process slows llama.cpp down.

It prints the machine (CPU model, cores, memory, the CPU's AVX flags), the
llama.cpp version, and one row per weight type: file size, load average at
the start, the 17-token prefill (time and tokens/s) and the decode speed
(tokens/s), each llama-bench's mean over --repetitions runs with its standard
deviation. --delete-gguf removes the GGUF files at the end (the build stays).
"""

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from helpers import LlamaError, load_params
from helpers.checkpoint import checkpoint_file
from helpers.tokenizer import SPECIAL_TOKENS, meta_tokenizer_file, read_ranks

LLAMA_CPP_PYTHON = "0.3.36"  # its sdist vendors llama.cpp 0c1e57098
DEFAULT_WORK = Path("/tmp/llama-cpp-bench")
PROGRAMS = ("llama-bench", "llama-quantize")
GiB = 1 << 30
DISK_MARGIN = GiB  # left free on the disk after each GGUF file is written
Q8_0_BYTES_PER_WEIGHT = 34 / 32  # a block of 32 int8 weights and one fp16 scale

# Meta's tensor names (per layer, after "layers.N.") and llama.cpp's (after "blk.N.").
LAYER_NAMES = {
    "attention.wq.weight": "attn_q.weight",
    "attention.wk.weight": "attn_k.weight",
    "attention.wv.weight": "attn_v.weight",
    "attention.wo.weight": "attn_output.weight",
    "attention_norm.weight": "attn_norm.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",  # w1: the gate, the silu side
    "feed_forward.w3.weight": "ffn_up.weight",    # w3: the up projection
    "feed_forward.w2.weight": "ffn_down.weight",  # w2: the down projection
    "ffn_norm.weight": "ffn_norm.weight",
}
GLOBAL_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}


class BenchError(Exception):
    """A problem with the input or the machine, explained to the reader."""


def say(message=""):
    print(message, flush=True)


# ---------------------------------------------------------------------------
# 1. Build llama-bench and llama-quantize from llama-cpp-python's sdist.
# ---------------------------------------------------------------------------

def run(command, **kwargs):
    """Run a command, and on failure raise BenchError with the end of its output."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BenchError(f"`{' '.join(map(str, command))}` failed (exit code {result.returncode}):\n{tail}")
    return result.stdout


def source_dir(work, version):
    """The sdist's vendored llama.cpp, downloaded from PyPI and unpacked if not already there."""
    unpacked = work / f"llama_cpp_python-{version}"
    if not (unpacked / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        archive = work / f"llama_cpp_python-{version}.tar.gz"
        if not archive.is_file():
            say(f"Downloading llama-cpp-python {version}'s source from PyPI into {work} ...")
            run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-binary", ":all:", "--no-deps", f"llama-cpp-python=={version}", "--dest", str(work)])
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
    return unpacked


def vendored_commit(unpacked, version):
    """The llama.cpp commit the sdist vendors, from its CHANGELOG ("update llama.cpp to ...@abc123")."""
    changelog = (unpacked / "CHANGELOG.md").read_text(encoding="utf-8")
    section = changelog.split(f"## [{version}]", 1)[-1].split("\n## [", 1)[0]
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section)
    return found.group(1) if found else "unknown"


def find_cmake(work):
    """cmake on the PATH, or else the one of PyPI's `cmake` package, installed into the work folder."""
    if cmake := shutil.which("cmake"):
        return cmake
    target = work / "cmake-from-pypi"
    found = sorted(target.glob("cmake/data/bin/cmake"))
    if not found:
        say("cmake is not on the PATH: installing the `cmake` package from PyPI into the work folder ...")
        try:
            run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--target", str(target), "cmake"])
        except BenchError as error:
            raise BenchError(f"No cmake: it is not on the PATH, and `pip install cmake` failed. Install cmake "
                             f"(apt-get install cmake, or pip install cmake).\n{error}") from None
        found = sorted(target.glob("cmake/data/bin/cmake"))
    if not found:
        raise BenchError(f"No cmake: not on the PATH, and PyPI's cmake package in {target} has no "
                         "cmake/data/bin/cmake.")
    return str(found[0])


def check_compilers():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not (cc and cxx):
        missing = " and ".join(name for name, found in (("C", cc), ("C++", cxx)) if not found)
        raise BenchError(f"No {missing} compiler on the PATH: llama.cpp is C and C++. Install one "
                         "(Debian/Ubuntu: apt-get install build-essential), or set CC and CXX.")


def build(work, version, nice):
    """The folder of the built llama-bench and llama-quantize (reused when both exist)."""
    bin_dir = work / "build" / "bin"
    if all((bin_dir / program).is_file() for program in PROGRAMS):
        say(f"Reusing the build in {bin_dir}.")
        return bin_dir
    check_compilers()
    cmake = find_cmake(work)
    unpacked = source_dir(work, version)
    commit = vendored_commit(unpacked, version)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        cmake, "-S", str(unpacked / "vendor" / "llama.cpp"), "-B", str(work / "build"), *generator,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",            # -march=native: this CPU's AVX2 / AVX-512
        "-DBUILD_SHARED_LIBS=OFF",     # programs that run from anywhere
        "-DLLAMA_OPENSSL=OFF",         # no downloads (llama.cpp dropped curl for its own HTTP client)
        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
        f"-DLLAMA_BUILD_COMMIT={commit}",  # the sdist is no git checkout: say which commit it holds
    ]
    jobs = str(os.cpu_count() or 1)
    say(f"Building llama.cpp {commit} (llama-cpp-python {version}) in {work / 'build'}: "
        f"{', '.join(PROGRAMS)} only, {jobs} jobs at nice {nice}; up to an hour ...")
    started = time.monotonic()
    run(configure)
    run(["nice", "-n", str(nice), cmake, "--build", str(work / "build"), "--config", "Release",
         "--target", *PROGRAMS, "--parallel", jobs])
    say(f"Built in {(time.monotonic() - started) / 60:.1f} minutes.")
    return bin_dir


# ---------------------------------------------------------------------------
# 2. Meta's checkpoint to GGUF.
# ---------------------------------------------------------------------------

def import_gguf(unpacked=None):
    """The gguf package: installed, or else the gguf-py folder vendored in the sdist."""
    try:
        import gguf
    except ImportError:
        vendored = unpacked / "vendor" / "llama.cpp" / "gguf-py" if unpacked else None
        if vendored is None or not vendored.is_dir():
            raise BenchError("The gguf package is not installed: `pip install gguf`.") from None
        spec = importlib.util.spec_from_file_location("gguf", vendored / "gguf" / "__init__.py")
        gguf = sys.modules["gguf"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gguf)
    return gguf


def gguf_name(meta_name):
    """llama.cpp's name for a tensor of Meta's checkpoint: layers.3.feed_forward.w1.weight -> blk.3.ffn_gate.weight."""
    if meta_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[meta_name]
    found = re.fullmatch(r"layers\.(\d+)\.(.+)", meta_name)
    if not found or found.group(2) not in LAYER_NAMES:
        raise BenchError(f"{meta_name!r} is not a tensor of a Meta Llama 3 checkpoint.")
    return f"blk.{found.group(1)}.{LAYER_NAMES[found.group(2)]}"


def byte_to_unicode():
    """GPT-2's printable stand-in for each byte, the alphabet of llama.cpp's BPE ("gpt2") vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def llama3_vocab(tokenizer_path):
    """Tokens (as GPT-2 byte strings), their types (1 normal, 3 control) and BPE merges, from tokenizer.model.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank. As merges, that is every
    split of each token into two tokens, ordered by the rank of the token they make (as Hugging Face's
    conversion of Llama 3's tokenizer does).
    """
    ranks = read_ranks(tokenizer_path)
    to_unicode = byte_to_unicode()
    text = {token: "".join(to_unicode[b] for b in token) for token in ranks}
    by_rank = sorted(ranks, key=ranks.get)
    merges = []
    for token in by_rank:
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        splits = sorted((ranks[a], ranks[b], a, b) for a, b in splits if a in ranks and b in ranks)
        merges += [f"{text[a]} {text[b]}" for _, _, a, b in splits]
    tokens = [text[token] for token in by_rank] + SPECIAL_TOKENS
    types = [1] * len(by_rank) + [3] * len(SPECIAL_TOKENS)
    return tokens, types, merges


def tokenizer_file(model_dir):
    """The folder's tokenizer.model, or Meta's copy in llama-models (synthetic checkpoints have none)."""
    path = Path(model_dir) / "tokenizer.model"
    return path if path.is_file() else meta_tokenizer_file()


def gguf_tensors(weights, params):
    """(llama.cpp name, tensor) in the checkpoint's order; no output tensor where it is tied to the table."""
    tied = weights.get("output.weight") is weights["tok_embeddings.weight"]
    tensors = [(gguf_name(name), w) for name, w in weights.items() if not (tied and name == "output.weight")]
    if params.rope_scaling_factor is not None:
        tensors.append(("rope_freqs.weight", rope_factors(params)))
    return tensors


def rope_factors(params):
    """llama.cpp's form of Llama 3.1's RoPE scaling: per pair, what its turn rate is divided by."""
    from helpers.rope import pair_frequencies
    return pair_frequencies(params.head_dim, params.rope_theta) / pair_frequencies(
        params.head_dim, params.rope_theta, params.rope_scaling)


def stored(gguf, tensor):
    """The array GGUF stores, and its type: matrices in BF16 (as they are), vectors in F32 (as llama.cpp converts)."""
    import torch
    if tensor.dim() == 1:
        return tensor.float().numpy(), gguf.GGMLQuantizationType.F32
    # numpy has no bfloat16: the same 16 bits, seen as uint16, without a copy.
    return tensor.view(torch.int16).numpy().view("uint16"), gguf.GGMLQuantizationType.BF16


def gguf_bytes(tensors):
    """The size of the BF16 GGUF's tensor data (the metadata adds about 8 MB)."""
    return sum(t.numel() * (4 if t.dim() == 1 else 2) for _, t in tensors)


def check_space(folder, needed, what):
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise BenchError(f"Not enough disk space in {folder} for {what}: it needs {needed / 1e9:.2f} GB "
                         f"plus {DISK_MARGIN / GiB:.0f} GiB to spare, and {free / 1e9:.2f} GB are free. "
                         "Free some space, or choose another --gguf-dir.")


def write_gguf(model_dir, out_path, gguf, name=None, vocab=None):
    """Write Meta's checkpoint in `model_dir` as a BF16 GGUF at `out_path`, one tensor at a time.

    `vocab` is (tokens, types, merges), by default `llama3_vocab` of the folder's tokenizer. The
    file appears under its name only when complete (written as .NAME.partial, then renamed).
    """
    import torch

    from helpers.checkpoint import load_weights
    model_dir, out_path = Path(model_dir), Path(out_path)
    params = load_params(model_dir)
    weights = load_weights(model_dir, params)  # memory-mapped, every shape checked
    tensors = gguf_tensors(weights, params)
    check_space(out_path.parent, gguf_bytes(tensors) + 64 * 2**20, f"the BF16 GGUF {out_path.name}")
    tokens, types, merges = vocab or llama3_vocab(tokenizer_file(model_dir))
    if len(tokens) != params.vocab_size:
        raise BenchError(f"tokenizer.model has {len(tokens)} tokens with the special ones, params.json says "
                         f"vocab_size {params.vocab_size}: are they from the same model?")

    partial = out_path.with_name(f".{out_path.name}.partial")
    writer = gguf.GGUFWriter(partial, "llama")
    writer.add_name(name or model_dir.name)
    # Llama 3 was trained on 8,192 positions; 3.1 and later (scaled RoPE) on 131,072.
    writer.add_context_length(params.max_seq_len)
    writer.add_embedding_length(params.dim)
    writer.add_block_count(params.n_layers)
    writer.add_feed_forward_length(params.hidden_dim)
    writer.add_head_count(params.n_heads)
    writer.add_head_count_kv(params.n_kv_heads)
    writer.add_rope_dimension_count(params.head_dim)
    writer.add_rope_freq_base(params.rope_theta)
    writer.add_layer_norm_rms_eps(params.norm_eps)
    writer.add_vocab_size(params.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")       # byte-level BPE
    writer.add_tokenizer_pre("llama-bpe")    # Llama 3's pre-tokenizer (its split pattern)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(SPECIAL_TOKENS.index("<|begin_of_text|>") + len(tokens) - len(SPECIAL_TOKENS))
    writer.add_eos_token_id(SPECIAL_TOKENS.index("<|end_of_text|>") + len(tokens) - len(SPECIAL_TOKENS))
    writer.add_add_bos_token(True)
    # The file starts with the header, the metadata and every tensor's name, shape and type ...
    for gname, tensor in tensors:
        array, kind = stored(gguf, tensor)
        writer.add_tensor_info(gname, array.shape, array.dtype, array.nbytes, raw_dtype=kind)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # ... then the tensors' data, in the same order, read one at a time from the mapped checkpoint.
        with torch.inference_mode():
            for _, tensor in tensors:
                writer.write_tensor_data(stored(gguf, tensor)[0])
        writer.close()
        partial.rename(out_path)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return out_path


def quantize(bin_dir, bf16_path, out_path, n_weights, nice):
    """llama-quantize's Q8_0 copy of the BF16 GGUF, under a temporary name until complete."""
    check_space(out_path.parent, int(n_weights * Q8_0_BYTES_PER_WEIGHT) + 64 * 2**20, f"the Q8_0 GGUF {out_path.name}")
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        run(["nice", "-n", str(nice), str(bin_dir / "llama-quantize"), str(bf16_path), str(partial), "Q8_0",
             str(os.cpu_count() or 1)])
        partial.rename(out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path


# ---------------------------------------------------------------------------
# 3. Measure.
# ---------------------------------------------------------------------------

def machine():
    """CPU model, cores, memory and AVX flags, from /proc."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown (no /proc)"
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    avx = sorted(f for f in (flags.group(1).split() if flags else []) if f.startswith(("avx", "amx")))
    memory = int(re.search(r"MemTotal:\s*(\d+)", meminfo).group(1)) * 1024
    if not any(f.startswith("avx512") for f in avx):
        avx.append("(no avx512)")
    return (f"{model.group(1).strip() if model else 'unknown CPU'}, {os.cpu_count()} CPUs, "
            f"{memory / GiB:.1f} GiB; flags: {' '.join(avx) or 'no avx'}")


def wait_for_quiet(max_load, wait):
    """Wait up to `wait` seconds for the 1-minute load average to fall below `max_load`; return it."""
    deadline = time.monotonic() + wait
    load = os.getloadavg()[0]
    if load >= max_load:
        say(f"  load average {load:.2f}: waiting up to {wait:.0f} s for it to fall below {max_load} ...")
    while load >= max_load and time.monotonic() < deadline:
        time.sleep(10)
        load = os.getloadavg()[0]
    if load >= max_load:
        say(f"  still {load:.2f} after {wait:.0f} s: measuring anyway (the figures will be low).")
    return load


def llama_bench(bin_dir, model, prompt, gen, threads, repetitions, repack=None, depth=0):
    """llama-bench's JSON result for one test: a prompt of `prompt` tokens, or `gen` tokens decoded one at a time.

    A failed run gives the reason instead, in a line: the prompt and the decoding are measured apart, so that
    one of them crashing (llama.cpp 0c1e57098's repacked Q8_0 prompt code did, on a Xeon with AVX-512) still
    leaves the other's figure.
    """
    command = [str(bin_dir / "llama-bench"), "-m", str(model), "-p", str(prompt), "-n", str(gen),
               "-t", str(threads), "-r", str(repetitions), "-o", "json"]
    if repack is not None:
        command += ["--repack", str(repack)]
    if depth:
        command += ["-d", str(depth)]  # positions in the context before the test
    try:
        out = run(command)
    except BenchError as error:
        return str(error).splitlines()[0]
    return json.loads(out[out.index("["):])[0]


def failed(reason):
    """A table cell for a llama-bench run that failed."""
    return "failed: " + reason[reason.index("(exit code"):].strip("():") if "(exit code" in reason else reason


def row(kind, pp, tg, load):
    """One line of the table, from llama-bench's prompt and generation results (a string where one failed)."""
    size = next((r["model_size"] for r in (pp, tg) if isinstance(r, dict)), None)
    prefill = failed(pp) if isinstance(pp, str) else \
        f"{pp['avg_ns'] / 1e9:.2f} s ({pp['avg_ts']:.1f} ± {pp['stddev_ts']:.1f} tokens/s)"
    decode = failed(tg) if isinstance(tg, str) else f"{tg['avg_ts']:.2f} ± {tg['stddev_ts']:.2f} tokens/s"
    file_size = "?" if size is None else f"{size / 1e9:.2f} GB"
    return f"| {kind} | {file_size} | {load:.2f} | {prefill} | {decode} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir",
                        help="a Meta Llama 3 folder: params.json, consolidated.00.pth (and tokenizer.model)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"build folder (default {DEFAULT_WORK})")
    parser.add_argument("--gguf-dir", type=Path, help="where the GGUF files go (default WORK/gguf)")
    parser.add_argument("--llama-cpp-python", default=LLAMA_CPP_PYTHON, metavar="VERSION",
                        help=f"whose sdist is built (default {LLAMA_CPP_PYTHON})")
    parser.add_argument("--types", default="bf16,q8_0", help="weight types to measure: bf16, q8_0 (default both)")
    parser.add_argument("--prompt", type=int, default=17, help="prompt tokens (llama-bench -p)")
    parser.add_argument("--gen", type=int, default=32, help="generated tokens (llama-bench -n)")
    parser.add_argument("--threads", type=int, default=2, help="threads (llama-bench -t)")
    parser.add_argument("--repetitions", type=int, default=5, help="runs of each test (llama-bench -r)")
    parser.add_argument("--repack", type=int, choices=(0, 1),
                        help="llama-bench --repack: 0 keeps the Q8_0 weights as stored, 1 rearranges them for the "
                             "CPU's vector instructions (llama-bench's default)")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="wait for the 1-minute load average to fall below this")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for it at most, per run")
    parser.add_argument("--build-nice", type=int, default=15,
                        help="niceness of the compiler and of llama-quantize (not of the benchmark)")
    parser.add_argument("--delete-gguf", action="store_true", help="delete the GGUF files at the end")
    args = parser.parse_args(argv)
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    if not types or set(types) - {"bf16", "q8_0"}:
        parser.error(f"--types takes bf16 and q8_0, not {args.types!r}")

    model_dir = Path(args.model_dir).expanduser()
    try:
        if not model_dir.is_dir():
            raise BenchError(f"{model_dir} does not exist or is not a folder. Write a synthetic checkpoint first: "
                             f"scripts/write_synthetic_checkpoint.py {model_dir} --shape 3-8b")
        params = load_params(model_dir)
        checkpoint_file(model_dir)
        args.work.mkdir(parents=True, exist_ok=True)
        gguf_dir = args.gguf_dir or args.work / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        say(f"Machine: {machine()}")
        say(f"Load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 minutes)")

        bin_dir = build(args.work, args.llama_cpp_python, args.build_nice)
        unpacked = args.work / f"llama_cpp_python-{args.llama_cpp_python}"
        commit = vendored_commit(unpacked, args.llama_cpp_python) if unpacked.is_dir() else "unknown"
        say(f"llama.cpp: {commit}, vendored by llama-cpp-python {args.llama_cpp_python}; built with -DGGML_NATIVE=ON")

        stem = model_dir.resolve().name
        bf16 = gguf_dir / f"{stem}-bf16.gguf"
        if bf16.is_file():
            say(f"Reusing {bf16}.")
        else:
            say(f"Writing {bf16} ...")
            started = time.monotonic()
            write_gguf(model_dir, bf16, import_gguf(unpacked), name=stem)
            say(f"  written in {time.monotonic() - started:.0f} s.")
        files = {"bf16": bf16}
        if "q8_0" in types:
            files["q8_0"] = gguf_dir / f"{stem}-q8_0.gguf"
            if files["q8_0"].is_file():
                say(f"Reusing {files['q8_0']}.")
            else:
                say(f"Quantising to {files['q8_0']} ...")
                quantize(bin_dir, bf16, files["q8_0"], params_weights(params), args.build_nice)

        rows, built = [], ""
        repack = "" if args.repack is None else f" --repack {args.repack}"
        for kind in types:
            say(f"llama-bench -m {files[kind].name} -p {args.prompt} -n 0, then -p 0 -n {args.gen}; "
                f"-t {args.threads} -r {args.repetitions}{repack} ...")
            load = wait_for_quiet(args.max_load, args.wait)
            pp, tg = (llama_bench(bin_dir, files[kind], prompt, gen, args.threads, args.repetitions, args.repack)
                      if prompt or gen else "not run" for prompt, gen in ((args.prompt, 0), (0, args.gen)))
            rows.append(row(kind.upper(), pp, tg, load))
            say(f"  {rows[-1]}")
            for result in (pp, tg):
                if isinstance(result, dict):
                    built = (f"llama-bench build {result['build_commit']} ({result['build_number']}), "
                             f"{result['cpu_info']}")
                elif result != "not run":
                    say(f"  {result}")
        say()
        say(f"{stem}: {params.n_layers} layers, dim {params.dim}; {args.threads} threads{repack}; {built}")
        say(f"| weights | file | load average | {args.prompt}-token prefill | decode ({args.gen} tokens) |")
        say("|---|---|---|---|---|")
        for line in rows:
            say(line)
        if args.delete_gguf:
            for path in files.values():
                path.unlink(missing_ok=True)
            say(f"Deleted {', '.join(p.name for p in files.values())}.")
    except (BenchError, LlamaError) as error:
        sys.exit(f"error: {error}")


def params_weights(params):
    """The number of weights in the checkpoint's matrices and vectors (the output counted once if tied)."""
    from helpers import expected_shapes
    return sum(math.prod(shape) for shape in expected_shapes(params).values())


if __name__ == "__main__":
    main()
