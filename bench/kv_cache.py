"""Time to generate 100 tokens on the embedded tiny model, with and without the KV cache.

    .venv/bin/python bench/kv_cache.py [--tokens 100] [--repeats 3] [--threads 1]

Greedy decoding of the classic prompt, never stopping early. With the cache,
the prompt is read once and each step then runs the model on one new
position; without it, each step runs the model on the whole sequence again.
Each way runs `--repeats` times, alternating, and the best time counts (the
least disturbed by other work on the machine). Both ways must give the same
tokens. A benchmark, not a test: the figures depend on the machine.

It uses one PyTorch thread unless told otherwise. A step of a model this
small is mostly the overhead of many small operations, and on a shared
machine threads that wait for each other multiply that overhead: one thread
measures the cache rather than the scheduler. `--threads 0` keeps PyTorch's
own choice.
"""

import argparse
import os
import sys
import time

import torch

from helpers import TINY_MODEL_DIR, generate, load_model

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "


def timed(model, ids, n, use_cache):
    start = time.perf_counter()
    result = generate(model, ids, n, use_cache=use_cache, stop_ids=())
    return time.perf_counter() - start, result.new_ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100, help="how many tokens to generate (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the best counts (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads; 0 keeps PyTorch's choice (default 1)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    model = load_model(TINY_MODEL_DIR, verbose=False)
    ids = model.tokenizer.encode(PROMPT)
    timed(model, ids, 3, use_cache=True)  # warm up: first calls allocate buffers and touch the weights
    best = {True: float("inf"), False: float("inf")}
    tokens = {}
    for _ in range(args.repeats):
        for use_cache in (True, False):
            seconds, tokens[use_cache] = timed(model, ids, args.tokens, use_cache)
            best[use_cache] = min(best[use_cache], seconds)
    if tokens[True] != tokens[False]:
        sys.exit("The cached and uncached runs gave different tokens: the cache is wrong.")
    n = args.tokens
    print(f"tiny model, {len(ids)}-token prompt, {n} new tokens, greedy, {torch.get_num_threads()} thread(s), "
          f"best of {args.repeats}")
    print(f"with the KV cache:    {best[True]:7.2f} s  ({best[True] / n * 1000:6.1f} ms/token)")
    print(f"without (recompute):  {best[False]:7.2f} s  ({best[False] / n * 1000:6.1f} ms/token)")
    print(f"speedup:              {best[False] / best[True]:7.1f}x")
    print(f"load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs (other work on the machine slows the cached steps the most)")


if __name__ == "__main__":
    main()
