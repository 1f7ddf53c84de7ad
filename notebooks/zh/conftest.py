"""nbval executes one Chinese notebook, 02, in `make test`: the generated file is a valid notebook whose
outputs are the English ones. The others differ from their English notebooks only in markdown, and
tests/test_zh.py checks that, and that every one is what scripts/sync_zh.py writes."""

from pathlib import Path

collect_ignore = [path.name for path in Path(__file__).parent.glob("*.ipynb") if not path.name.startswith("02_")]
