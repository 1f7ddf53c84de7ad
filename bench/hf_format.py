"""Meta's format against Hugging Face's: load_model plus a 17-token forward pass, time and peak anonymous memory.

    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-meta
    .venv/bin/python scripts/write_synthetic_checkpoint.py /tmp/llama3-8b-hf --format hf
    .venv/bin/python bench/hf_format.py /tmp/llama3-8b-meta /tmp/llama3-8b-hf

The two folders hold the same numbers (the writer draws them from the same seed). Each run is a fresh
Python process that imports the course, then times load_model and forward on the classic prompt (17
tokens); this process samples its RssAnon every 5 ms (as bench/fit.py does): the memory the kernel cannot
drop. Before each run the folder's weight files are read once, so both formats start from a warm page
cache (the two 8B folders do not fit in it together). The runs alternate between the formats, --repeats
times each; the best time of each is compared, and the logits of the two must be equal bit for bit.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "the answer to the ultimate question of life, the universe, and everything is "
CHILD = """
import json, sys, time, torch
from helpers import forward, load_model
start = time.perf_counter()
model = load_model(sys.argv[1], verbose=False)
loaded = time.perf_counter()
with torch.inference_mode():
    logits = forward(model, model.tokenizer.encode(sys.argv[2]))
done = time.perf_counter()
torch.save(logits[-1].clone(), sys.argv[3])
print("RESULT " + json.dumps({"load": loaded - start, "forward": done - loaded, "tokens": logits.shape[0]}))
"""


def warm(folder):
    """Read the folder's weight files once, so that the run finds them in the page cache."""
    for path in sorted(Path(folder).iterdir()):
        if path.suffix in (".pth", ".safetensors"):
            with open(path, "rb", buffering=0) as f:
                while f.read(64 << 20):
                    pass


def rss_anon_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("RssAnon:")), 0)
    except OSError:
        return 0


def run(folder, logits_file):
    """One measured run: its load and forward times, and its peak anonymous memory in bytes."""
    warm(folder)
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), PROMPT, str(logits_file)],
                               stdout=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, rss_anon_kib(process.pid))
        time.sleep(0.005)
    lines = [line for line in process.stdout.read().splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise SystemExit(f"the run on {folder} failed (exit status {process.returncode})")
    return json.loads(lines[-1][7:]) | {"peak_anon": peak * 1024}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("meta_dir", help="a model folder in Meta's format")
    parser.add_argument("hf_dir", help="the same model in Hugging Face's format")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each format, alternating (default 2)")
    args = parser.parse_args(argv)
    import torch

    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, folder in (("Meta", args.meta_dir), ("Hugging Face", args.hf_dir)):
                r = run(folder, Path(tmp) / f"{name}.pt")
                print(f"{name:<13} run {repeat + 1}: load {r['load']:6.2f} s, forward ({r['tokens']} tokens) "
                      f"{r['forward']:6.2f} s, total {r['load'] + r['forward']:6.2f} s, "
                      f"peak anonymous memory {r['peak_anon'] / 1e9:.2f} GB", flush=True)
                total, (fastest, peak) = r["load"] + r["forward"], best.get(name, (float("inf"), 0))
                best[name] = min(fastest, total), max(peak, r["peak_anon"])
        last = [torch.load(Path(tmp) / f"{name}.pt", weights_only=True) for name in ("Meta", "Hugging Face")]
        same = torch.equal(*last)
    (meta, meta_anon), (hf, hf_anon) = best["Meta"], best["Hugging Face"]
    print(f"best load + forward: Meta {meta:.2f} s, Hugging Face {hf:.2f} s: ratio {hf / meta:.2f}; peak anonymous "
          f"memory (largest of the runs): Meta {meta_anon / 1e9:.2f} GB, Hugging Face {hf_anon / 1e9:.2f} GB; "
          f"last-position logits {'equal bit for bit' if same else 'DIFFERENT'}.")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
