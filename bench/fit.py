"""Will it fit? The usual tutorial code against the helpers, side by side, on a checkpoint of any Llama 3 shape.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3.2-1b-synthetic --shape 3.2-1b
    .venv/bin/python bench/fit.py /tmp/llama3.2-1b-synthetic

The folder can be any Llama 3 checkpoint: a synthetic one of a real model's
shapes (scripts/write_synthetic_checkpoint.py --shape, one of helpers.params.SHAPES),
or the real thing. Every size comes from its params.json and its
file. Each measurement runs in a fresh Python process, so that its peaks are
its own:

  (a) the usual tutorial way (the anti-pattern, written out below as tutorials
      teach it): torch.load without mmap, an fp32 nn.Embedding copy of the
      table, a Python loop over heads with bf16 matrix products;
  (b) the helpers: load_model (memory-mapped) and forward;
  (c) decoding with the KV cache: helpers.generate, tokens per second;
  (d) the same with int8 weights (helpers.quantize_model, one scale per row,
      quantised in the child after loading: notebook 08), and the bytes of
      its matrices against bf16's.

For each it prints the load time, the time of the 17-token prefill (the
classic prompt), the peak RSS and the peak anonymous memory:
- peak RSS is the child's own VmHWM (/proc/self/status), read by the child
  when it is done. It counts the pages of a memory-mapped file the process has
  touched, which the kernel can drop and read again at any time;
- peak anonymous memory is RssAnon (/proc/<pid>/status) sampled by this
  process every 5 ms while the child runs: memory only the process holds and
  the kernel cannot drop without swap, which is what gets a process killed.
(a) and (b) each run twice: "cold", with the page cache dropped first (root
only; "?" where that is not allowed), so that the checkpoint comes from disk,
and "warm", with the file read into the page cache first (as on a second run).
Cold, both are bound by the disk: each reads the whole checkpoint once. (a)
is skipped where the memory available could not hold it: the whole
checkpoint, plus the float32 copy of the embedding table, plus 1 GiB.

(c) and (d) run warm. (d)'s peak anonymous memory holds its int8 matrices,
made in memory from the bf16 file. Their first decoded token builds the compiled one-row kernels of
helpers/kernels.py (about 20 to 30 s per new model shape, less when torch's
compile cache has them); that happens in a warm-up run, whose prefill and
first decoded token are reported on their own, so the tokens/s are those of
decoding alone. With --compile-cache empty, each of (c) and (d) starts from
an empty compile cache of its own, as a first run on a new machine does.

Then a memory-limit check runs (b) under cgroup v1 memory limits of 4, 6, 8
and 12 GiB (--limits), smallest first, and reports the smallest that passes.
(a) and (b) run in cgroups limited to this machine's memory less 3 GiB (20
GiB on a 24 GB machine), so that only they are killed if they go too far.
Options: --cache cold|warm|both, --skip-tutorial, --skip-limits, --limits,
--decode-tokens N, --compile-cache found|empty.

A benchmark, not a test: the figures depend on the machine, and on what else
runs on it. With PyTorch's default of one thread per core, one other busy
process makes its parallel regions wait for a descheduled thread: a forward
pass ran 10x slower here that way. How busy the CPUs were is printed first,
and each run's row says how much of the CPUs other processes used while it
ran ("others"; the child's own compile or I/O work is not counted).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
GiB = 1 << 30
LIMITS_GIB = (4, 6, 8, 12)
SAFETY_HEADROOM_GIB = 3  # (a) and (b) may use all of the machine's memory but this
SAMPLE_SECONDS = 0.005


# ---------------------------------------------------------------------------
# (a) The usual tutorial way. THE ANTI-PATTERN: do not copy this code.
# It is what a from-scratch tutorial typically teaches, kept plain here so
# that the benchmark measures what readers actually run.
# ---------------------------------------------------------------------------

def tutorial_load(model_dir):
    from helpers import load_tokenizer  # the tokenizer is the same in (a) and (b); it is not the point

    with open(Path(model_dir) / "params.json") as f:
        config = json.load(f)
    # The whole checkpoint is read into memory (no mmap): 16 GB for an 8B.
    model = torch.load(Path(model_dir) / "consolidated.00.pth", weights_only=True)
    # A float32 copy of the whole embedding table: vocab_size x dim x 4 bytes, 2.1 GB more for an 8B.
    embedding_layer = torch.nn.Embedding(config["vocab_size"], config["dim"])
    embedding_layer.weight.data.copy_(model["tok_embeddings.weight"])
    return config, model, embedding_layer, load_tokenizer(model_dir)


def tutorial_rms_norm(tensor, norm_weights, norm_eps):
    return (tensor * torch.rsqrt(tensor.pow(2).mean(-1, keepdim=True) + norm_eps)) * norm_weights


def tutorial_rotate(x, freqs_cis):
    pairs = torch.view_as_complex(x.float().view(x.shape[0], -1, 2))
    return torch.view_as_real(pairs * freqs_cis).view(x.shape)


def tutorial_forward(config, model, embedding_layer, tokens):
    """The last position's logits, one head at a time, in bf16."""
    dim, n_heads, n_kv_heads = config["dim"], config["n_heads"], config["n_kv_heads"]
    head_dim, eps = dim // n_heads, config["norm_eps"]
    tokens = torch.tensor(tokens)
    final_embedding = embedding_layer(tokens).to(torch.bfloat16)
    freqs = 1.0 / (config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if config.get("use_scaled_rope"):  # Llama 3.1 and later; the scaling is the model's (see helpers/rope.py)
        from helpers import params_from_dict
        freqs = params_from_dict(config).rope_scaling.scale(freqs)
    freqs_for_each_token = torch.outer(torch.arange(len(tokens)).float(), freqs)
    freqs_cis = torch.polar(torch.ones_like(freqs_for_each_token), freqs_for_each_token)
    mask = torch.triu(torch.full((len(tokens), len(tokens)), float("-inf")), diagonal=1)
    for layer in range(config["n_layers"]):
        qkv_attention_store = []
        layer_embedding_norm = tutorial_rms_norm(
            final_embedding, model[f"layers.{layer}.attention_norm.weight"], eps)
        q_layer = model[f"layers.{layer}.attention.wq.weight"].view(n_heads, head_dim, dim)
        k_layer = model[f"layers.{layer}.attention.wk.weight"].view(n_kv_heads, head_dim, dim)
        v_layer = model[f"layers.{layer}.attention.wv.weight"].view(n_kv_heads, head_dim, dim)
        w_layer = model[f"layers.{layer}.attention.wo.weight"]
        for head in range(n_heads):
            kv_head = head // (n_heads // n_kv_heads)
            q_per_token = torch.matmul(layer_embedding_norm, q_layer[head].T)
            k_per_token = torch.matmul(layer_embedding_norm, k_layer[kv_head].T)
            v_per_token = torch.matmul(layer_embedding_norm, v_layer[kv_head].T)
            q_rotated = tutorial_rotate(q_per_token, freqs_cis)
            k_rotated = tutorial_rotate(k_per_token, freqs_cis)
            qk_per_token = torch.matmul(q_rotated, k_rotated.T) / head_dim ** 0.5
            scores = torch.nn.functional.softmax(qk_per_token + mask, dim=1).to(torch.bfloat16)
            qkv_attention_store.append(torch.matmul(scores, v_per_token))
        stacked_qkv_attention = torch.cat(qkv_attention_store, dim=-1)
        embedding_after_edit = final_embedding + torch.matmul(stacked_qkv_attention, w_layer.T)
        normalized = tutorial_rms_norm(embedding_after_edit, model[f"layers.{layer}.ffn_norm.weight"], eps)
        w1 = model[f"layers.{layer}.feed_forward.w1.weight"]
        w2 = model[f"layers.{layer}.feed_forward.w2.weight"]
        w3 = model[f"layers.{layer}.feed_forward.w3.weight"]
        output_after_feedforward = torch.matmul(
            torch.nn.functional.silu(torch.matmul(normalized, w1.T)) * torch.matmul(normalized, w3.T), w2.T)
        final_embedding = embedding_after_edit + output_after_feedforward
    final_embedding = tutorial_rms_norm(final_embedding, model["norm.weight"], eps)
    # Llama 3.2 1B and 3B have no output.weight: the output layer is the embedding table (tied).
    output = model["output.weight"] if "output.weight" in model else model["tok_embeddings.weight"]
    return torch.matmul(final_embedding[-1], output.T)


# ---------------------------------------------------------------------------
# The child processes: each measures one thing and prints one JSON line.
# ---------------------------------------------------------------------------

def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def status_kib(pid, key):
    """A `key: N kB` field of /proc/<pid>/status, in KiB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child(mode, model_dir, logits_file, decode_tokens):
    result = {}
    with torch.inference_mode():
        if mode == "tutorial":
            (config, model, embedding, tokenizer), result["load_s"] = timed(tutorial_load, model_dir)
            tokens = tokenizer.encode(PROMPT)
            logits, result["prefill_s"] = timed(tutorial_forward, config, model, embedding, tokens)
            _, result["again_s"] = timed(tutorial_forward, config, model, embedding, tokens)
        elif mode == "helpers":
            from helpers import forward, load_model
            model, result["load_s"] = timed(load_model, model_dir, verbose=False)
            tokens = model.tokenizer.encode(PROMPT)
            logits, result["prefill_s"] = timed(forward, model, tokens)
            _, result["again_s"] = timed(forward, model, tokens)
            logits = logits[-1]
        elif mode in ("decode", "decode-int8"):
            from helpers import KVCache, forward, generate, kernels, load_model, quantize_model, weight_bytes
            model, result["load_s"] = timed(load_model, model_dir, verbose=False)
            result["matrices_bytes"] = weight_bytes(model)
            if mode == "decode-int8":
                model, result["quantize_s"] = timed(quantize_model, model)
                result["int8_matrices_bytes"] = weight_bytes(model)
            tokens = model.tokenizer.encode(PROMPT)
            # A first run maps every page of the checkpoint into this process (and reads the weights into the
            # page cache if they are not there), and its one decoded token builds the compiled one-row
            # kernels (helpers/kernels.py): both would bias what follows, and are reported on their own. Then
            # one new token is the prefill; decoding is the difference between that and a run of
            # `decode_tokens` new tokens.
            cache = KVCache(model.params, len(tokens) + 2)
            logits, result["warmup_prefill_s"] = timed(forward, model, tokens, cache)
            _, result["first_token_s"] = timed(forward, model, [int(logits[-1].argmax())], cache)
            kernels.wait()  # the kernels that first token asked for, compiled in the background ...
            forward(model, [int(logits[-1].argmax())], cache)  # ... and loaded here, untimed
            _, result["prefill_s"] = timed(generate, model, tokens, 1, stop_ids=())
            out, total = timed(generate, model, tokens, decode_tokens, stop_ids=())
            assert len(out.new_ids) == decode_tokens
            result["tokens_per_s"] = (decode_tokens - 1) / (total - result["prefill_s"])
            logits = None
    if logits is not None and logits_file:
        torch.save(logits.float(), logits_file)
    result["vmhwm_kib"] = status_kib("self", "VmHWM")
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# The parent: page cache, cgroups, sampling, the table.
# ---------------------------------------------------------------------------

def drop_page_cache():
    """Empty the page cache so that the next run reads the checkpoint from disk (root only)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cgroup_v1_problem():
    """Why a cgroup v1 memory limit cannot be used here, or None when it can."""
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        return f"no cgroup v1 memory controller at {CGROUP_ROOT}"
    if not os.access(CGROUP_ROOT, os.W_OK):
        return f"{CGROUP_ROOT} is not writable (run as root)"
    return None


class MemoryCgroup:
    """A fresh cgroup v1 memory cgroup with a limit, removed on exit."""

    def __init__(self, label, limit_bytes):
        self.path = CGROUP_ROOT / f"llama3-fit-{os.getpid()}-{label}"
        self.limit = limit_bytes

    def __enter__(self):
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        memsw = self.path / "memory.memsw.limit_in_bytes"  # memory + swap: present when swap accounting is on
        if memsw.exists():
            memsw.write_text(str(self.limit))
        return self

    def join(self):
        """For preexec_fn: move the child into the cgroup before it runs Python, so all its memory is charged here."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def read(self, name):
        return (self.path / name).read_text()

    def __exit__(self, *exc):
        for _ in range(50):  # a killed child may take a moment to leave
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"Could not remove the cgroup {self.path}: remove it with rmdir.", file=sys.stderr)


def run_child(mode, model_dir, cgroup=None, logits_file=None, decode_tokens=0, compile_cache=None):
    """Run one measurement in a fresh process; sample its RssAnon; return its results (or why it failed).

    `compile_cache`: a folder for torch.compile's cache (TORCHINDUCTOR_CACHE_DIR), else torch's own.
    """
    command = [sys.executable, __file__, "--child", mode, str(model_dir),
               "--logits-file", logits_file or "", "--decode-tokens", str(decode_tokens)]
    env = os.environ | ({"TORCHINDUCTOR_CACHE_DIR": str(compile_cache)} if compile_cache else {})
    others = OthersMeter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: prepare_child(cgroup))
    peak_anon = 0
    while process.poll() is None:
        peak_anon = max(peak_anon, status_kib(process.pid, "RssAnon") or 0)
        time.sleep(SAMPLE_SECONDS)
    lines = [line for line in process.stdout.read().splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if process.returncode == 0 and lines else {}
    result |= {"returncode": process.returncode, "peak_anon_kib": peak_anon, "others_busy": others.share()}
    if cgroup is not None:
        result["oom_kills"] = oom_kills(cgroup)
        result["cgroup_max_usage"] = int(cgroup.read("memory.max_usage_in_bytes"))
    return result


def prepare_child(cgroup):
    """Runs in the child before Python starts: if memory runs out, the OOM killer takes it first, not a neighbour."""
    Path("/proc/self/oom_score_adj").write_text("1000")
    if cgroup is not None:
        cgroup.join()


def oom_kills(cgroup):
    """How many processes the OOM killer ended in `cgroup` (the oom_kill line of newer kernels, else -1)."""
    for line in cgroup.read("memory.oom_control").splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return -1


def failure(result):
    code = result["returncode"]
    if code == 0:
        return None
    if code == -9 or result.get("oom_kills", 0) > 0:
        return f"killed (SIGKILL, out of memory; cgroup OOM kills: {result.get('oom_kills', '?')})"
    return f"failed with exit status {code}"


def idle_and_total():
    """All CPUs' idle (with iowait) and total time so far, in clock ticks, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(n) for n in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def own_cpu_seconds():
    """CPU time used so far by this process and by the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class OthersMeter:
    """How busy other processes kept the CPUs from now on: all CPU time used, less this process's and its children's.

    On 2 cores, one other busy process can make a run several times slower (see the top of this file),
    so a figure measured while others were busy is not this code's.
    """

    def __init__(self):
        (self.idle, self.total), self.own = idle_and_total(), own_cpu_seconds()

    def share(self):
        """The share of all CPU time, since this meter was made, that other processes used."""
        idle, total = idle_and_total()
        ticks = max(1, total - self.total)
        busy_seconds = (ticks - (idle - self.idle)) / os.sysconf("SC_CLK_TCK")
        others = busy_seconds - (own_cpu_seconds() - self.own)
        return max(0.0, others * os.sysconf("SC_CLK_TCK") / ticks)


def cpu_busy(seconds=1.0):
    """The share of CPU time not idle over `seconds`, from /proc/stat (the load average counts sleeping tasks too)."""
    idle, total = idle_and_total()
    time.sleep(seconds)
    idle_after, total_after = idle_and_total()
    return 1 - (idle_after - idle) / max(1, total_after - total)


def checkpoint_size(model_dir):
    return sum(p.stat().st_size for p in Path(model_dir).glob("consolidated.*.pth"))


def describe(model_dir):
    """The shapes of the checkpoint in a few words, from params.json (the file is not opened)."""
    config = json.loads(Path(model_dir, "params.json").read_text())
    return (f"dim {config['dim']}, {config['n_layers']} layers, {config['n_heads']} heads, "
            f"{config['n_kv_heads']} key/value heads" + (", scaled RoPE" if config.get("use_scaled_rope") else ""))


def tutorial_need(model_dir):
    """Bytes (a) holds: the whole checkpoint, a float32 copy of the embedding table, and 1 GiB for the rest."""
    config = json.loads(Path(model_dir, "params.json").read_text())
    return checkpoint_size(model_dir) + 4 * config["vocab_size"] * config["dim"] + GiB


def safety_limit():
    """The memory limit of (a) and (b)'s cgroups: this machine's memory less SAFETY_HEADROOM_GIB, in whole GiB."""
    return max(1, status_meminfo("MemTotal") * 1024 // GiB - SAFETY_HEADROOM_GIB) * GiB


def mem_available():
    return status_meminfo("MemAvailable") * 1024


def status_meminfo(key):
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def gb(kib):
    return f"{kib * 1024 / 1e9:.2f} GB" if kib else "-"


def seconds(value):
    return f"{value:.1f} s" if value is not None else "-"


def measure(args):
    model_dir = Path(args.model_dir)
    size = checkpoint_size(model_dir)
    print(f"Checkpoint: {model_dir} ({size / 1e9:.2f} GB; {describe(model_dir)}), {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {mem_available() / 1e9:.1f} GB available, CPUs {cpu_busy():.0%} busy "
          "before the start (other work distorts the times).")
    cgroup_problem = cgroup_v1_problem()
    modes = {"helpers": "(b) helpers"}
    if args.skip_tutorial:
        print("(a) skipped (--skip-tutorial).")
    elif mem_available() < tutorial_need(model_dir):
        print(f"(a) skipped: it needs about {tutorial_need(model_dir) / 1e9:.1f} GB of memory and "
              f"{mem_available() / 1e9:.1f} GB are available.")
    else:
        modes = {"tutorial": "(a) tutorial way"} | modes
    rows, logits = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for state in ("cold", "warm") if args.cache == "both" else (args.cache,):
            for mode, name in modes.items():
                logits[mode] = Path(tmp) / f"{mode}.pt"
                rows[name, state] = run_measured(mode, name, state, model_dir, cgroup_problem, logits[mode])
        if args.decode_tokens:
            state = set_page_cache("warm", model_dir)
            for mode, name, what in [("decode", "(c) helpers decode", "(c) decoding"),
                                     ("decode-int8", "(d) int8 decode", "(d) the same with int8 weights")]:
                # An empty compile cache of its own for each, under tmp, when asked for.
                compile_cache = Path(tmp) / f"compile-{mode}" if args.compile_cache == "empty" else None
                print(f"{what}: {args.decode_tokens} tokens with the KV cache ({state} page cache, "
                      f"{args.compile_cache} compile cache) ...", flush=True)
                rows[name, state] = run_child(mode, model_dir, decode_tokens=args.decode_tokens,
                                              compile_cache=compile_cache)
        print_table(rows)
        compare(rows, logits)
    if args.skip_limits:
        print("\nMemory-limit check skipped (--skip-limits).")
    elif cgroup_problem:
        print(f"\nMemory-limit check skipped: {cgroup_problem}.")
    else:
        limit_check(model_dir, args.limits)


def set_page_cache(state, model_dir):
    """"cold": drop the page cache; "warm": read the checkpoint into it. Returns the state reached, or "?"."""
    if state == "cold":
        return "cold" if drop_page_cache() else "?"
    path = next(Path(model_dir).glob("consolidated.*.pth"))
    if mem_available() < path.stat().st_size + GiB:
        return "?"
    with open(path, "rb", buffering=0) as f:
        while f.read(64 << 20):
            pass
    return "warm"


def run_measured(mode, name, state, model_dir, cgroup_problem, logits_file):
    """One run of `mode` from a cold or warm page cache, in a safety cgroup (see safety_limit) where there is one."""
    state = set_page_cache(state, model_dir)
    print(f"{name} ({state} page cache) ...", flush=True)
    if cgroup_problem:
        return run_child(mode, model_dir, logits_file=str(logits_file))
    with MemoryCgroup(mode, safety_limit()) as cgroup:
        return run_child(mode, model_dir, cgroup, logits_file=str(logits_file))


def print_table(rows):
    print()
    header = f"{'':<22}{'cache':>6}{'load':>9}{'prefill':>9}{'again':>9}{'load+prefill':>14}" \
             f"{'peak RSS':>11}{'peak anon':>11}{'decode':>12}{'others':>8}"
    print(header)
    print("-" * len(header))
    for (name, cache), r in rows.items():
        if failure(r):
            print(f"{name:<22}{cache:>6}  {failure(r)}; peak anon {gb(r['peak_anon_kib'])}")
            continue
        total = r["load_s"] + r["prefill_s"] if "again_s" in r else None
        decode = f"{r['tokens_per_s']:.2f} tok/s" if "tokens_per_s" in r else "-"
        print(f"{name:<22}{cache:>6}{seconds(r['load_s']):>9}{seconds(r['prefill_s']):>9}"
              f"{seconds(r.get('again_s')):>9}{seconds(total):>14}{gb(r['vmhwm_kib']):>11}"
              f"{gb(r['peak_anon_kib']):>11}{decode:>12}{r['others_busy']:>8.0%}")
    for (name, _cache), r in rows.items():
        if "first_token_s" in r and not failure(r):
            print(f"\n{name}: in the warm-up run before it, the prefill took {r['warmup_prefill_s']:.1f} s, then the "
                  f"first decoded token, which builds the compiled one-row kernels, {r['first_token_s']:.1f} s.")
        if "int8_matrices_bytes" in r and not failure(r):
            print(f"{name}: quantising took {r['quantize_s']:.1f} s; the matrices one token reads, "
                  f"{r['matrices_bytes'] / 1e9:.2f} GB in bf16, are {r['int8_matrices_bytes'] / 1e9:.2f} GB in int8 "
                  f"with their scales; decode {r['tokens_per_s']:.2f} tokens/s.")
    print("\nload: params, tokenizer and weights ready; prefill: the 17-token classic prompt (first run, "
          "then again in the same process).\npeak RSS: VmHWM, counts touched pages of the memory-mapped "
          "file, which the kernel can drop; peak anon: RssAnon sampled every 5 ms, memory it cannot drop.\n"
          "others: the share of the CPUs that other processes kept busy during the run. Above a few percent, "
          "the times are\nnot this code's alone: run again when the machine is quiet.")


def compare(rows, logits):
    print()
    for state in ("cold", "warm"):
        a, b = rows.get(("(a) tutorial way", state)), rows.get(("(b) helpers", state))
        if a and b and not failure(a) and not failure(b):
            ratio = (b["load_s"] + b["prefill_s"]) / (a["load_s"] + a["prefill_s"])
            print(f"(b)/(a), load + prefill, {state} page cache: {ratio:.2f}   (target: at most 0.35)")
    if not all(path.exists() for path in logits.values()) or len(logits) < 2:
        return
    la, lb = (torch.load(logits[name], weights_only=True) for name in ("tutorial", "helpers"))
    print(f"Same next token in (a) and (b): {'yes' if la.argmax() == lb.argmax() else 'NO'} (id {int(lb.argmax())}); "
          f"largest logit difference {float((la - lb).abs().max()):.3f}, from (a)'s bf16 arithmetic "
          f"(the logits span {float(lb.min()):.1f} to {float(lb.max()):.1f}).")


def limit_check(model_dir, limits=LIMITS_GIB):
    print("\nMemory-limit check: (b)'s forward under cgroup v1 limits, page cache dropped before each run.")
    passed = None
    for limit in sorted(limits):
        drop_page_cache()
        with MemoryCgroup(f"{limit}gib", limit * GiB) as cgroup:
            result = run_child("helpers", model_dir, cgroup)
        why = failure(result)
        times = "" if why else (f", load+prefill {result['load_s'] + result['prefill_s']:.1f} s, "
                                f"again {result['again_s']:.1f} s")
        print(f"  {limit:>2} GiB: {'FAILED: ' + why if why else 'passed'} (cgroup peak "
              f"{result['cgroup_max_usage'] / 1e9:.2f} GB, peak anon {gb(result['peak_anon_kib'])}{times}, "
              f"others {result['others_busy']:.0%})", flush=True)
        if not why:
            passed = limit
            break
    print(f"Smallest limit passed: {passed} GiB." if passed else "No limit passed.")
    print("A cgroup's usage counts the page cache of the files it reads as well as its processes' own memory.\n"
          "The page cache is reclaimable: at the limit the kernel drops pages of the memory-mapped checkpoint\n"
          "already used and reads them from disk again when they are needed, so the cgroup peak reaching the\n"
          "limit is not a failure, and each forward pass reads the file again. Only the anonymous memory must fit.")


def gib_list(text):
    """--limits: comma-separated positive whole numbers of GiB."""
    try:
        limits = tuple(int(part) for part in text.split(","))
    except ValueError:
        limits = ()
    if not limits or min(limits) <= 0:
        raise argparse.ArgumentTypeError(f"expected whole numbers of GiB above 0, such as 4,6,8, not {text!r}")
    return limits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a Llama 3 folder: params.json and consolidated.00.pth "
                                          "(for example one written by scripts/write_synthetic_checkpoint.py)")
    parser.add_argument("--decode-tokens", type=int, default=16,
                        help="tokens to generate for (c) and (d); 0 skips them")
    parser.add_argument("--cache", choices=["cold", "warm", "both"], default="both",
                        help="run (a) and (b) with the page cache dropped, with the file read into it first, or both")
    parser.add_argument("--skip-tutorial", action="store_true",
                        help="do not run (a), which holds the whole checkpoint and more in memory")
    parser.add_argument("--skip-limits", action="store_true", help="do not run the memory-limit check")
    parser.add_argument("--compile-cache", choices=["found", "empty"], default="found",
                        help="(c) and (d) use torch.compile's cache as found, or each an empty one of its own: "
                             "the first decoded token then compiles every kernel from scratch")
    parser.add_argument("--limits", type=gib_list, default=LIMITS_GIB, metavar="GIB,GIB,...",
                        help="the memory limits to try, in GiB (default 4,6,8,12); the smallest that passes ends it")
    parser.add_argument("--child", choices=["tutorial", "helpers", "decode", "decode-int8"], help=argparse.SUPPRESS)
    parser.add_argument("--logits-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.decode_tokens == 1 or args.decode_tokens < 0:
        parser.error("--decode-tokens must be 0 (skip) or at least 2: the first new token is the prefill")
    if args.child:
        child(args.child, args.model_dir, args.logits_file, args.decode_tokens)
    elif not Path(args.model_dir, "params.json").is_file():
        from helpers.params import SHAPES
        print(f"No checkpoint in {args.model_dir}. Write one first, of the shapes of the model you want to try:\n"
              f"  .venv/bin/python scripts/write_synthetic_checkpoint.py {args.model_dir} --shape 3.2-1b\n"
              f"(--shape {', '.join(SHAPES)})", file=sys.stderr)
        return 1
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
