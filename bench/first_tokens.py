"""The first decoded tokens' times, from an empty torch.compile cache: the pause a new session waits.

    .venv/bin/python bench/first_tokens.py DIR [--tokens 8] [--int8] [--compile-cache empty|found]

In a fresh process (this one, started for it), it loads the model, reads the classic prompt (17 tokens),
then decodes --tokens tokens one at a time and prints each one's time: the first ones run while the
one-row kernels compile (helpers/kernels.py), by the block path, and one of them loads the kernels.
`--compile-cache empty` (the default) points TORCHINDUCTOR_CACHE_DIR at a new empty folder first.
No figure here is a test.
"""

import argparse
import os
import sys
import tempfile
import time

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--tokens", type=int, default=8, help="tokens decoded (default 8)")
    parser.add_argument("--int8", action="store_true", help="quantise the matrices to int8 first")
    parser.add_argument("--compile-cache", choices=["empty", "found"], default="empty")
    args = parser.parse_args(argv)
    if args.compile_cache == "empty":  # before torch is imported
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="first-tokens-")
    started = time.perf_counter()
    import torch

    from helpers import KVCache, forward, kernels, load_model, quantize_model
    model = load_model(args.model_dir, verbose=False)
    model = quantize_model(model) if args.int8 else model
    print(f"{args.model_dir}: {'int8' if args.int8 else 'bf16'}, {torch.get_num_threads()} threads, "
          f"{args.compile_cache} compile cache; imported and loaded in {time.perf_counter() - started:.1f} s; "
          f"kernels compiled {'in the background' if kernels.BACKGROUND else 'in the caller'}", flush=True)
    tokens = model.tokenizer.encode(PROMPT)
    with torch.inference_mode():
        cache = KVCache(model.params, len(tokens) + args.tokens)
        started = time.perf_counter()
        logits = forward(model, tokens, cache, last_only=True)
        print(f"prompt ({len(tokens)} tokens): {time.perf_counter() - started:.2f} s", flush=True)
        times = []
        for _ in range(args.tokens):
            started = time.perf_counter()
            logits = forward(model, [int(logits[-1].argmax())], cache, last_only=True)
            times.append(time.perf_counter() - started)
            print(f"token {len(times)}: {times[-1]:.2f} s ({len(kernels._shapes)} kernels in use)", flush=True)
    print(f"first token {times[0]:.2f} s; slowest {max(times):.2f} s; all {len(times)} in {sum(times):.1f} s; "
          f"last {times[-1]:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
