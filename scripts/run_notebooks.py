"""Execute the course's notebooks in order, headless, and say how long each took and how much memory.

    python scripts/run_notebooks.py                  # on the model find_model() finds; the files are not changed
    python scripts/run_notebooks.py --model DIR      # on the model in DIR (LLAMA3_DIR is set for the kernels)
    python scripts/run_notebooks.py --write          # on the embedded tiny model, saving the new outputs
    python scripts/run_notebooks.py 03 04            # only the notebooks whose names start with these

Prints one line per notebook: its status, its time, and its kernel's peak memory, as peak RSS (which
counts the pages of the memory-mapped checkpoint the kernel has read: the OS can drop them and read them
again) and peak anonymous memory (what the kernel holds itself: the memory that runs out). Exits
non-zero if any notebook failed.

`--write` always uses the tiny model, whatever model is attached: the committed outputs are the ones
`make test` compares, on the tiny model, on every machine. It lets the notebooks find it by themselves,
as a learner's would without a larger model, and points LLAMA3_DIR at it only where another is found.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from traitlets.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"
TINY_MODEL_DIR = REPO_ROOT / "data" / "tiny-llama3"


def memory_kb(pid, field):
    """A field of /proc/PID/status in kB (VmHWM: peak RSS; RssAnon: anonymous memory now); None off Linux."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Follows a kernel's peak RSS and, sampled every 20 ms, its peak anonymous memory."""

    def __init__(self):
        self.pid, self.peak_rss_kb, self.peak_anon_kb = None, 0, 0
        self._stop = threading.Event()

    def start(self, pid):
        self.pid = pid
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_anon_kb = max(self.peak_anon_kb, memory_kb(self.pid, "RssAnon") or 0)

    def after_cell(self):
        """VmHWM is the kernel's own high-water mark; read while the kernel is alive, after each cell."""
        self.peak_rss_kb = max(self.peak_rss_kb, memory_kb(self.pid, "VmHWM") or 0)

    def stop(self):
        self._stop.set()


def execute(path, model_dir=None, extra_cells=(), timeout=3600):
    """Run the notebook at `path` in a fresh kernel started in the notebook's folder, as Jupyter does,
    on the model in `model_dir` (None: the one found).

    `extra_cells` are code cells run after the notebook's own. Returns the executed notebook and
    its kernel's `PeakMemory`; raises CellExecutionError at the first cell that fails.
    """
    notebook = nbformat.read(path, as_version=4)
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in extra_cells]
    memory = PeakMemory()
    env = dict(os.environ)
    if model_dir is not None:
        env["LLAMA3_DIR"] = str(Path(model_dir).resolve())
    # Where it can (not on Windows), the kernel talks to this process over Unix sockets in a folder of
    # its own rather than over TCP, which ipykernel warns is unencrypted: both ends are on this machine.
    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        ipc = {"transport": "ipc", "ip": os.path.join(sockets, "ipc")} if os.name == "posix" else {}
        client = NotebookClient(notebook, config=Config({"KernelManager": ipc}), kernel_name="python3",
                                timeout=timeout, record_timing=False,
                                resources={"metadata": {"path": str(Path(path).parent)}},
                                on_notebook_start=lambda **_: memory.start(client.km.provisioner.pid),
                                on_cell_complete=lambda **_: memory.after_cell())
        try:
            client.execute(env=env)
        finally:
            memory.stop()
    return notebook, memory


def save(notebook, path):
    notebook.metadata.pop("widgets", None)  # progress-bar widgets' state: noise in the file
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)


def main():
    parser = argparse.ArgumentParser(description="Execute the course's notebooks in order.")
    parser.add_argument("only", nargs="*", help="name prefixes of the notebooks to run (default: all)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="DIR", help="the model folder to run them on (default: as find_model)")
    which.add_argument("--write", action="store_true",
                       help="run them on the embedded tiny model and save the new outputs into the notebooks")
    args = parser.parse_args()
    paths = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
             if not args.only or p.name.startswith(tuple(args.only))]
    if not paths:
        sys.exit(f"No notebook matches {args.only} in notebooks/.")
    model_dir = args.model
    if args.write:
        from helpers.model import downloaded_model_dirs, kaggle_model_dirs

        # The tiny model, found by the search as in a learner's fresh clone; pinned only where another is here.
        os.environ.pop("LLAMA3_DIR", None)
        model_dir = TINY_MODEL_DIR if kaggle_model_dirs() or downloaded_model_dirs() else None
    failed, start = [], time.perf_counter()
    print(f"{'notebook':<32} {'time':>8} {'peak RSS':>10} {'peak anon':>10}")
    for path in paths:
        began = time.perf_counter()
        try:
            notebook, memory = execute(path, model_dir)
            if args.write:  # only a notebook that ran to the end is saved
                save(notebook, path)
            status = "ok"
        except CellExecutionError as error:
            failed.append(path.name)
            status, memory = f"FAILED: {error.ename}: {error.evalue}", None
        peaks = f"{memory.peak_rss_kb / 1e6:7.2f} GB {memory.peak_anon_kb / 1e6:7.2f} GB" if memory else " " * 21
        print(f"{path.name:<32} {time.perf_counter() - began:6.1f} s {peaks}  {status}", flush=True)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran in {time.perf_counter() - start:.0f} s"
          + (" and their outputs were saved." if args.write and not failed else "."))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
