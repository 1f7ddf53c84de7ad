"""Build the Chinese edition, notebooks/zh/, from the English notebooks and their translations.

    python scripts/sync_zh.py            # write notebooks/zh/*.ipynb (nothing, and exit 1, if a cell is not translated)
    python scripts/sync_zh.py --check    # write nothing; exit 1 if a cell is not translated or a notebook is outdated
    python scripts/sync_zh.py --todo     # add every cell that needs translating to its file, in English, marked todo

Each English notebook is taken whole, with its executed outputs, and each of its markdown cells is
replaced by its Chinese text; code cells and outputs stay byte for byte as they are. The Chinese texts
live in notebooks/zh/translations/, one file per notebook, one block per markdown cell:

    <!-- cell 1a2b3c4d sha 0123456789abcdef -->
    中文……

`cell` is the English cell's id, and `sha` the first 16 hex digits of the SHA-256 of the English text
the block translates. When that text changes, the hash no longer matches and the cell is stale; a new
English cell has no block. Either way this script names the notebook and the cell, and stops until the
block is translated again (with the new English text's hash). `--todo` writes such blocks for you: the
English text of a new cell, or the old translation of a changed one, under a header that ends in `todo`;
translate it, and drop the `todo`.
"""

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HEADER = re.compile(r"^<!-- cell (\S+) sha ([0-9a-f]{16})( todo)? -->$", re.MULTILINE)


def english_hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cell_text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def read_notebook(path):
    return json.loads(path.read_text(encoding="utf-8"))


def notebook_json(notebook):
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def read_translations(path):
    """{cell id: (sha, text, todo)} from a translation file (empty when there is none)."""
    if not path.exists():
        return {}
    content = path.read_text(encoding="utf-8")
    headers = list(HEADER.finditer(content))
    if content[: headers[0].start() if headers else len(content)].strip():
        raise SystemExit(f"{path}: text before the first `<!-- cell ... -->` header; each block starts with one.")
    blocks = {}
    for header, following in zip(headers, headers[1:] + [None], strict=True):
        cell_id, sha, todo = header.groups()
        if cell_id in blocks:
            raise SystemExit(f"{path}: cell {cell_id} has two blocks; keep one.")
        text = content[header.end() : following.start() if following else len(content)].strip("\n")
        blocks[cell_id] = (sha, text, bool(todo))
    return blocks


def write_translations(path, blocks):
    parts = [f"<!-- cell {cell_id} sha {sha}{' todo' if todo else ''} -->\n{text}\n" for cell_id, (sha, text, todo)
             in blocks.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def translate(english_path, translations_dir, root=REPO_ROOT):
    """(the Chinese notebook, [what is wrong with its translations]) for one English notebook."""
    english = read_notebook(english_path)
    translation_path = translations_dir / f"{english_path.stem}.md"
    blocks = read_translations(translation_path)
    chinese, problems, used = copy.deepcopy(english), [], set()
    for index, cell in enumerate(chinese["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text, cell_id = cell_text(cell), cell.get("id")
        first_line = text.strip().splitlines()[0][:70] if text.strip() else ""
        where = f"notebooks/{english_path.name}, cell {index} (id {cell_id}): {first_line!r}"
        if cell_id not in blocks:
            problems.append(f"{where} has no translation")
            continue
        used.add(cell_id)
        sha, translated, todo = blocks[cell_id]
        if sha != english_hash(text):
            problems.append(f"{where} changed in English since it was translated")
        elif todo:
            problems.append(f"{where} is marked todo")
        else:
            cell["source"] = translated.splitlines(keepends=True)
    for cell_id in blocks.keys() - used:
        problems.append(f"{translation_path.relative_to(root)}: cell {cell_id} is no longer in the English "
                        f"notebook; remove its block")
    return chinese, problems


def add_todo_blocks(english_path, translations_dir):
    """Add an English block marked todo for every markdown cell with no up-to-date translation; return how many."""
    translation_path = translations_dir / f"{english_path.stem}.md"
    old = read_translations(translation_path)
    blocks, added = {}, 0
    for cell in read_notebook(english_path)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text, sha = cell_text(cell), english_hash(cell_text(cell))
        if cell["id"] in old and old[cell["id"]][0] == sha:
            blocks[cell["id"]] = old[cell["id"]]
        else:  # a stale block keeps its old translation, to be brought in line with the new English text
            blocks[cell["id"]] = (sha, old[cell["id"]][1] if cell["id"] in old else text, True)
            added += 1
    if added or blocks.keys() != old.keys():
        write_translations(translation_path, blocks)
    return added


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="write nothing; fail on any difference")
    mode.add_argument("--todo", action="store_true", help="add the cells that need translating, marked todo")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)  # tests: a copy of the repo
    args = parser.parse_args(argv)
    english_dir, zh_dir = args.root / "notebooks", args.root / "notebooks" / "zh"
    translations_dir = zh_dir / "translations"
    english_paths = sorted(english_dir.glob("*.ipynb"))

    if args.todo:
        for path in english_paths:
            if added := add_todo_blocks(path, translations_dir):
                print(f"{translations_dir.relative_to(args.root) / (path.stem + '.md')}: {added} cells to translate")
        return 0

    problems, outputs = [], {}
    for path in english_paths:
        chinese, wrong = translate(path, translations_dir, args.root)
        problems += wrong
        outputs[zh_dir / path.name] = notebook_json(chinese)
    for path in sorted(set(zh_dir.glob("*.ipynb")) - outputs.keys()):
        problems.append(f"{path.relative_to(args.root)} has no English notebook; remove it")
    if problems:
        print(f"{len(problems)} cells of the Chinese edition need work:", *problems, sep="\n  ", file=sys.stderr)
        print("Translate each into its block in notebooks/zh/translations/ (`python scripts/sync_zh.py --todo` adds "
              "the English text there, marked todo), then run `python scripts/sync_zh.py`.", file=sys.stderr)
        return 1
    if args.check:
        outdated = [path for path, text in outputs.items()
                    if not path.exists() or path.read_text(encoding="utf-8") != text]
        if outdated:
            print("Not what `python scripts/sync_zh.py` writes now (the English notebooks changed):",
                  *(str(p.relative_to(args.root)) for p in outdated), sep="\n  ", file=sys.stderr)
            return 1
        print(f"notebooks/zh: {len(outputs)} notebooks, every markdown cell translated and up to date")
        return 0
    for path, text in outputs.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
