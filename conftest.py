"""Pins the embedded tiny model for every test and every notebook that pytest runs.

The committed notebook outputs come from the tiny model (scripts/run_notebooks.py --write pins it
the same way), and nbval compares them. A machine with another model attached (a Kaggle input, a
download in llama-3-8B/, LLAMA3_DIR set to the 8B) would otherwise run the notebooks on that model
and fail every comparison. Setting LLAMA3_DIR here, before any kernel starts, makes `make test`
test the same thing wherever it runs; tests that need another model pass it explicitly.
"""

import os
from pathlib import Path

os.environ["LLAMA3_DIR"] = str(Path(__file__).resolve().parent / "data" / "tiny-llama3")
