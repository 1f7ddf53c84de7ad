"""Time and memory of one forward pass of the embedded tiny model on the classic prompt.

    .venv/bin/python bench/tiny_forward.py

Prints the load time, the median of 20 forward passes, and the process's peak
resident memory. A benchmark, not a test: the figures depend on the machine.
"""

import resource
import statistics
import time

import torch

from helpers import TINY_MODEL_DIR, forward, load_model

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "

start = time.perf_counter()
model = load_model(TINY_MODEL_DIR, verbose=False)
load_s = time.perf_counter() - start
tokens = model.tokenizer.encode(PROMPT)
times = []
with torch.inference_mode():
    for _ in range(20):
        start = time.perf_counter()
        logits = forward(model, tokens)
        times.append(time.perf_counter() - start)
print(f"tiny model, {len(tokens)}-token prompt, {torch.get_num_threads()} threads")
print(f"load (params, tokenizer, mmap): {load_s * 1000:.0f} ms")
print(f"forward, median of 20:          {statistics.median(times) * 1000:.1f} ms")
print(f"peak RSS of the process:        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
print(f"next token: {model.tokenizer.decode([int(logits[-1].argmax())])!r}")
