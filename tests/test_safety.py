"""Checkpoints that would run code, torch.load's weights_only, and secrets in the repository."""

import ast
import json
import os
import re
import subprocess

import pytest
import torch

from helpers import REPO_ROOT, LlamaError, load_model

from conftest import write_model

# --- a checkpoint whose pickle would run code ------------------------------------------------------------


class RunsCode:
    """Unpickling this calls `function(*args)`: what a malicious checkpoint does."""

    def __init__(self, function, *args):
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def payloads(marker):
    return {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "exec": RunsCode(exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": RunsCode(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("kind", ["os.system", "exec", "subprocess"])
def test_a_checkpoint_with_a_hidden_payload_runs_nothing(tmp_path, small_vocab, kind):
    """Every tensor is right, and one extra entry would run code: load_model refuses the whole file."""
    marker = tmp_path / "payload-ran"
    folder, params, weights = small_vocab
    write_model(folder, params, weights | {"extra": payloads(marker)[kind]})
    with pytest.raises(LlamaError) as error:
        load_model(folder, verbose=False)
    assert not marker.exists()
    message = str(error.value)
    assert "holds objects other than tensors, and was refused" in message
    assert "weights_only=False" not in message  # torch's own hint would be the wrong advice here
    # The payload is live: an unsafe load runs it.
    torch.load(folder / "consolidated.00.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("style", ["old torch.save", "plain pickle"])
def test_a_checkpoint_that_is_not_a_zip_file_runs_nothing(tmp_path, small_vocab, style):
    marker = tmp_path / "payload-ran"
    folder, params, weights = small_vocab
    write_model(folder, params, {})
    weights = weights | {"extra": RunsCode(os.system, f"touch {marker}")}
    if style == "plain pickle":
        import pickle
        (folder / "consolidated.00.pth").write_bytes(pickle.dumps(weights))
    else:
        torch.save(weights, folder / "consolidated.00.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(LlamaError, match="is not a zip-format PyTorch checkpoint like Meta's consolidated.00.pth"):
        load_model(folder, verbose=False)
    assert not marker.exists()


# --- every torch.load passes weights_only=True ------------------------------------------------------------


def python_sources():
    """(name, code) of every Python file in helpers/, scripts/ and bench/, and every notebook's code cells."""
    for folder in ("helpers", "scripts", "bench"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(REPO_ROOT)), path.read_text(encoding="utf-8")
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                # IPython's %magic and !shell lines are not Python.
                source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
                yield f"{path.relative_to(REPO_ROOT)}, cell {i}", source


def unsafe_torch_loads(code):
    """Line numbers of calls to torch.load (or torch.serialization.load) without weights_only=True."""
    bad = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "torch.serialization.load"):
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                bad.append(node.lineno)
    return bad


def test_the_check_finds_an_unsafe_torch_load():
    assert unsafe_torch_loads("import torch\nw = torch.load('a.pth')\nv = torch.load('b', weights_only=True)") == [2]
    assert unsafe_torch_loads("torch.load('a', mmap=True, weights_only=False)") == [1]


def test_every_torch_load_passes_weights_only_true():
    sources = dict(python_sources())
    assert "helpers/checkpoint.py" in sources
    unsafe = {name: lines for name, code in sources.items() if (lines := unsafe_torch_loads(code))}
    assert unsafe == {}, "torch.load without weights_only=True (line numbers)"


# --- no secrets in notebooks or tracked files -------------------------------------------------------------

SECRET_PATTERNS = {
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{30,}",
    "Hugging Face API token (old)": r"\bapi_org_[A-Za-z0-9]{30,}",
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})",
    "OpenAI-style key": r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}",
    "AWS access key": r"\bAKIA[0-9A-Z]{16}\b",
    "Kaggle API key": r"\"key\"\s*:\s*\"[0-9a-f]{32}\"",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
}


def find_secrets(text):
    """The kind of every token-shaped string in `text`, with its first and last characters only."""
    return [f"{kind}: {m[0][:4]}...{m[0][-2:]}" for kind, pattern in SECRET_PATTERNS.items()
            for m in re.finditer(pattern, text)]


def notebook_text(path):
    """Everything a reader sees in a notebook, and its metadata, without base64 images."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    parts = [json.dumps(notebook.get("metadata", {}))]
    for cell in notebook["cells"]:
        parts.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            parts += ["".join(output.get("text", "")), "\n".join(output.get("traceback", [])), output.get("evalue", "")]
            for mime, data in output.get("data", {}).items():
                if not mime.startswith("image/"):
                    parts.append(data if isinstance(data, str) else "".join(data) if isinstance(data, list)
                                 else json.dumps(data))
    return "\n".join(parts)


def tracked_files():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO_ROOT / name for name in listed.stdout.split("\0") if name]


def text_of(path):
    """A file's text, or None for a binary file."""
    if path.suffix == ".ipynb":
        return notebook_text(path)
    with open(path, "rb") as f:
        if b"\0" in f.read(8192):  # binary: the checkpoint, images
            return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def test_the_scanner_flags_a_fake_token(tmp_path):
    fake = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"  # 34 letters, as the real ones have
    assert find_secrets(f"login with {fake}\n") == ["Hugging Face token: hf_a...GH"]
    notebook = {"cells": [{"cell_type": "code", "source": ["login()"], "outputs": [
        {"output_type": "stream", "name": "stdout", "text": [f"token = {fake}\n"]}]}], "metadata": {}}
    (tmp_path / "leak.ipynb").write_text(json.dumps(notebook))
    assert find_secrets(text_of(tmp_path / "leak.ipynb")) == ["Hugging Face token: hf_a...GH"]
    assert find_secrets("hf_hub_download and HF_TOKEN and hf_token() and sk-learn are fine") == []


def test_notebooks_hold_no_secrets():
    found = {path.name: hits for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
             if (hits := find_secrets(notebook_text(path)))}
    assert found == {}


def test_tracked_files_hold_no_secrets():
    found = {}
    for path in tracked_files():
        text = text_of(path) if path.is_file() else None
        if text and (hits := find_secrets(text)):
            found[str(path.relative_to(REPO_ROOT))] = hits
    assert found == {}
