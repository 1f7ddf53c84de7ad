"""Execute every notebook in notebooks/, in order, headless.

    python scripts/run_notebooks.py           # run them all; the files are not changed
    python scripts/run_notebooks.py --write   # run them and save the new outputs (after changing helpers/ or data/)
    python scripts/run_notebooks.py 03 04     # only the notebooks whose names start with these

Prints one line per notebook with its status and time, and exits non-zero
if any notebook failed.
"""

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(path, write):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    if write:  # only a notebook that ran to the end is saved
        notebook.metadata.pop("widgets", None)  # progress-bar widgets' state: noise in the file
        for cell in notebook.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(notebook, path)


def main():
    parser = argparse.ArgumentParser(description="Execute the course's notebooks in order.")
    parser.add_argument("only", nargs="*", help="name prefixes of the notebooks to run (default: all)")
    parser.add_argument("--write", action="store_true", help="save the new outputs into the notebooks")
    args = parser.parse_args()
    paths = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if not args.only or p.name.startswith(tuple(args.only))]
    if not paths:
        sys.exit(f"No notebook matches {args.only} in notebooks/.")
    failed, start = [], time.perf_counter()
    for path in paths:
        began = time.perf_counter()
        try:
            run(path, args.write)
            status = "ok"
        except CellExecutionError as error:
            failed.append(path.name)
            status = f"FAILED: {error.ename}: {error.evalue}"
        print(f"{path.name:<32} {time.perf_counter() - began:6.1f} s  {status}", flush=True)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran in {time.perf_counter() - start:.0f} s"
          + (" and their outputs were saved." if args.write and not failed else "."))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
