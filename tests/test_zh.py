"""The Chinese edition, notebooks/zh/: every markdown cell translated and up to date, every code cell and
output the English one, and a changed English cell named until it is translated again."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SYNC = REPO_ROOT / "scripts" / "sync_zh.py"
ENGLISH = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CJK = re.compile(r"[\u4e00-\u9fff]")


def sync(*args, root=REPO_ROOT):
    return subprocess.run([sys.executable, str(SYNC), *args, "--root", str(root)], capture_output=True, text=True)


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def test_every_cell_is_translated_and_every_notebook_is_what_the_script_writes():
    result = sync("--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"notebooks/zh: {len(ENGLISH)} notebooks, every markdown cell translated and up to date\n"
    assert len(ENGLISH) == 10


@pytest.mark.parametrize("english", ENGLISH, ids=lambda p: p.stem)
def test_code_and_outputs_are_the_english_ones_and_the_text_is_chinese(english):
    chinese = REPO_ROOT / "notebooks" / "zh" / english.name
    pairs = list(zip(cells(english), cells(chinese), strict=True))
    for en, zh in pairs:
        assert en["cell_type"] == zh["cell_type"]
        if en["cell_type"] == "markdown":
            assert CJK.search(source(zh)), f"cell {en['id']} has no Chinese: {source(zh)[:80]!r}"
        else:
            assert en == zh
    assert json.loads(english.read_text())["metadata"] == json.loads(chinese.read_text())["metadata"]


@pytest.fixture
def repo_copy(tmp_path):
    """The English notebooks and the Chinese edition, in a folder laid out like the repository."""
    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def edit_notebook(path, change):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    change(notebook["cells"])
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def first_markdown(cell_list):
    return next(i for i, c in enumerate(cell_list) if c["cell_type"] == "markdown" and i > 0)


def test_a_changed_english_cell_is_named_until_it_is_translated_again(repo_copy):
    english = repo_copy / "notebooks" / "02_embeddings_rmsnorm.ipynb"
    index = first_markdown(cells(english))
    cell_id = cells(english)[index]["id"]
    edit_notebook(english, lambda c: c[index]["source"].append("\nOne more English sentence."))

    result = sync("--check", root=repo_copy)
    assert result.returncode == 1
    assert f"notebooks/02_embeddings_rmsnorm.ipynb, cell {index} (id {cell_id}): " in result.stderr
    assert "changed in English since it was translated" in result.stderr
    assert result.stderr.startswith("1 cells of the Chinese edition need work:")
    assert sync(root=repo_copy).returncode == 1  # and nothing is written
    assert (repo_copy / "notebooks" / "zh" / english.name).read_bytes() == (
        REPO_ROOT / "notebooks" / "zh" / english.name).read_bytes()

    # --todo marks the block, keeping its old translation to start from; it still fails until translated
    assert sync("--todo", root=repo_copy).returncode == 0
    translations = repo_copy / "notebooks" / "zh" / "translations" / "02_embeddings_rmsnorm.md"
    header = re.search(rf"^<!-- cell {re.escape(cell_id)} sha [0-9a-f]{{16}} todo -->\n", translations.read_text(),
                       re.MULTILINE)
    assert header
    assert "is marked todo" in sync("--check", root=repo_copy).stderr

    text = translations.read_text()
    translations.write_text(text.replace(header.group(0), header.group(0).replace(" todo", "")))
    assert sync(root=repo_copy).returncode == 0  # translated again: the notebook is written
    assert sync("--check", root=repo_copy).returncode == 0


def test_a_new_english_cell_without_a_translation_and_a_removed_one_are_named(repo_copy):
    english = repo_copy / "notebooks" / "05_feed_forward.ipynb"
    removed = cells(english)[first_markdown(cells(english))]["id"]

    def change(cell_list):
        del cell_list[first_markdown(cell_list)]
        cell_list.append({"cell_type": "markdown", "id": "brand-new", "metadata": {}, "source": ["## A new section"]})

    edit_notebook(english, change)
    result = sync("--check", root=repo_copy)
    assert result.returncode == 1
    assert "(id brand-new): '## A new section' has no translation" in result.stderr
    assert f"notebooks/zh/translations/05_feed_forward.md: cell {removed} is no longer in the English" in result.stderr


def test_a_changed_english_output_makes_the_committed_chinese_notebook_out_of_date(repo_copy):
    english = repo_copy / "notebooks" / "02_embeddings_rmsnorm.ipynb"
    code = next(i for i, c in enumerate(cells(english)) if c["cell_type"] == "code" and c["outputs"])
    edit_notebook(english, lambda c: c[code]["outputs"].clear())
    result = sync("--check", root=repo_copy)
    assert result.returncode == 1
    assert "Not what `python scripts/sync_zh.py` writes now" in result.stderr
    assert "notebooks/zh/02_embeddings_rmsnorm.ipynb" in result.stderr
    assert sync(root=repo_copy).returncode == 0
    assert sync("--check", root=repo_copy).returncode == 0


def glossary():
    """(preferred words, variants not used) from docs/zh-glossary.md's table."""
    preferred, avoided = [], []
    for line in (REPO_ROOT / "docs" / "zh-glossary.md").read_text(encoding="utf-8").splitlines():
        columns = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(columns) != 3 or columns[0] in ("English", "---"):
            continue
        preferred += [w for w in re.split(r"[、,() ]+", columns[1]) if CJK.search(w)]
        avoided += [w.strip() for w in columns[2].split(",") if w.strip()]
    return preferred, avoided


def test_the_glossary_is_followed():
    preferred, avoided = glossary()
    assert "词元" in preferred and "令牌" in avoided and "访问令牌" in preferred
    texts = {p.relative_to(REPO_ROOT): p.read_text(encoding="utf-8")
             for p in [*sorted((REPO_ROOT / "notebooks" / "zh" / "translations").glob("*.md")),
                       REPO_ROOT / "README.zh.md"]}
    wrong = []
    for path, text in texts.items():
        allowed = [range(m.start(), m.end()) for word in preferred for m in re.finditer(re.escape(word), text)]
        for word in avoided:
            for m in re.finditer(re.escape(word), text):
                if not any(m.start() in r and m.end() - 1 in r for r in allowed):
                    wrong.append(f"{path}: {word!r} at {text[max(0, m.start() - 15):m.end() + 15]!r}")
    assert not wrong, "\n".join(wrong)


def test_the_front_pages_link_each_other():
    assert "(README.zh.md)" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    chinese = (REPO_ROOT / "README.zh.md").read_text(encoding="utf-8")
    assert chinese.startswith("[English](README.md)")
    for name in ("HF_ENDPOINT", "LLM-Research/Meta-Llama-3-8B", "llama-3-8B/original", "docs/zh-glossary.md"):
        assert name in chinese
    for link in re.findall(r"\]\((notebooks/zh/[^)]+\.ipynb)\)", chinese):
        assert (REPO_ROOT / link).is_file(), link
