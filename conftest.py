"""Makes every test and every notebook that pytest runs use the embedded tiny model.

The committed notebook outputs come from the tiny model (scripts/run_notebooks.py --write makes sure
of it the same way), and nbval compares them. A machine with another model attached (a Kaggle input,
a download in llama-3-8B/, LLAMA3_DIR set to the 8B) would otherwise run the notebooks on that model
and fail every comparison: there LLAMA3_DIR is pointed at the tiny model, before any kernel starts.
Elsewhere (CI, a fresh clone) the search finds the tiny model by itself, and the notebooks print what
a learner sees; notebooks/nbval_sanitize.cfg reads the pinned line as that one. Tests that need
another model pass it explicitly.
"""

import os

from helpers.model import TINY_MODEL_DIR, downloaded_model_dirs, kaggle_model_dirs

if os.environ.get("LLAMA3_DIR") or kaggle_model_dirs() or downloaded_model_dirs():
    os.environ["LLAMA3_DIR"] = str(TINY_MODEL_DIR)
