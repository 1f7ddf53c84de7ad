"""helpers.download against a stand-in for huggingface.co on 127.0.0.1 (tests/hub_server.py).

The stand-in serves the tiny model's files under meta-llama/Meta-Llama-3-8B's
names, so that what a test downloads can then be loaded.
"""

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import huggingface_hub
import huggingface_hub.constants
import pytest

import helpers.download
from helpers import REPO_ROOT, TINY_MODEL_DIR, LlamaError, check_disk_space, download_llama3, load_model
from helpers.download import hf_token, sha256_of, where_am_i
from helpers.model import is_model_dir
from helpers.tokenizer import meta_tokenizer_file

from hub_server import HubServer

TOKEN = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"  # a fake one, shaped like the real thing
CHECKPOINT = "original/consolidated.00.pth"


@pytest.fixture(scope="module")
def repo_files():
    files = {f"original/{name}": TINY_MODEL_DIR / name for name in ("params.json", "consolidated.00.pth")}
    return files | {"original/tokenizer.model": meta_tokenizer_file()}


@pytest.fixture
def no_saved_token(monkeypatch):
    """Hide any token of the machine running the tests."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(helpers.download, "_kaggle_secret", lambda name: None)


@pytest.fixture
def hub(repo_files, no_saved_token, monkeypatch):
    # huggingface_hub reads 10 MiB at a time; in 1 MiB pieces, this process's memory allocator is
    # left as it was, which test_loading's measurement of memory-mapping depends on.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 20)
    with HubServer(repo_files) as server:
        yield server


def fetch(hub, dest, **kwargs):
    return download_llama3(dest, endpoint=hub.url, **kwargs)


def gets(hub, server="cdn"):
    return [r for r in hub.requests if r["method"] == "GET" and r["server"] == server]


def test_full_download_can_be_loaded(hub, tmp_path, capsys):
    folder = fetch(hub, tmp_path / "llama-3-8B")
    assert folder == tmp_path / "llama-3-8B" / "original"
    for name, sha256 in hub.sha256.items():
        assert sha256_of(folder.parent / name) == sha256
    # Every size and sha256 was asked for (HEAD) before the first byte was downloaded.
    first_get = next(i for i, r in enumerate(hub.requests) if r["method"] == "GET")
    assert {r["path"].rsplit("/", 1)[-1] for r in hub.requests[:first_get]} >= {"params.json", "tokenizer.model",
                                                                                "consolidated.00.pth"}
    model = load_model(folder, verbose=False)
    assert model.params.n_layers == 4 and model.tokenizer.n_vocab == 128256

    # A second run finds the three files intact and downloads nothing.
    before = len(gets(hub)) + len(gets(hub, "hub"))
    assert fetch(hub, tmp_path / "llama-3-8B") == folder
    assert len(gets(hub)) + len(gets(hub, "hub")) == before
    assert "checked against the hub's sizes and sha256" in capsys.readouterr().out


def test_dropped_connection_resumes_where_it_stopped(hub, tmp_path):
    hub.cut_after = 20_000_000
    folder = fetch(hub, tmp_path)
    first, second = [r for r in gets(hub) if r["path"].endswith(hub.sha256[CHECKPOINT])]
    assert first["range"] is None and first["sent"] == 20_000_000
    # huggingface_hub keeps the whole pieces it received and asks for the rest with a Range request.
    start = int(second["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 20_000_000 and second["status"] == 206
    assert second["sent"] == hub.size(CHECKPOINT) - start
    assert sha256_of(folder / "consolidated.00.pth") == hub.sha256[CHECKPOINT]


def test_no_token_401(hub, tmp_path):
    hub.token = TOKEN
    with pytest.raises(LlamaError) as error:
        fetch(hub, tmp_path / "dest")
    message = str(error.value)
    assert message.startswith("No Hugging Face token (401 Unauthorized)")
    assert "Create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN" in message
    assert "login()" in message
    assert not (tmp_path / "dest").exists()


def test_wrong_token_401(hub, tmp_path):
    hub.token = TOKEN
    with pytest.raises(LlamaError, match=r"refused the token \(401 Unauthorized\): it is invalid or expired"):
        fetch(hub, tmp_path / "dest", token="hf_" + "x" * 34)
    assert not (tmp_path / "dest").exists()


def test_licence_not_accepted_403(hub, tmp_path):
    hub.token, hub.licence_accepted = TOKEN, False
    with pytest.raises(LlamaError) as error:
        fetch(hub, tmp_path / "dest", token=TOKEN)
    assert ("Accept the licence at https://huggingface.co/meta-llama/Meta-Llama-3-8B with the account that "
            "owns the token") in str(error.value)
    assert "(403 Forbidden)" in str(error.value)
    assert not (tmp_path / "dest").exists()


def test_a_token_from_the_environment_is_used(hub, tmp_path, monkeypatch):
    hub.token = TOKEN
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fetch(hub, tmp_path)
    assert {r["authorization"] for r in hub.requests if "/resolve/" in r["path"]} == {f"Bearer {TOKEN}"}
    # The CDN is another origin: like the real one, it never sees the token.
    assert {r["authorization"] for r in hub.requests if r["server"] == "cdn"} == {None}


def test_no_network(tmp_path, no_saved_token):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(LlamaError, match="Could not download params.json from http://127.0.0.1.*internet connection"):
        download_llama3(tmp_path, endpoint=endpoint)


def test_not_enough_disk_space_before_a_byte_is_written(hub, tmp_path, monkeypatch):
    real = helpers.download.shutil.disk_usage
    monkeypatch.setattr(helpers.download.shutil, "disk_usage", lambda path: real(path)._replace(free=1_000_000))
    with pytest.raises(LlamaError, match=r"needs 35\.5 MB in .*, but only 1\.0 MB is free"):
        fetch(hub, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert gets(hub) == [] and gets(hub, "hub") == []


def test_kaggle_working_has_its_own_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(helpers.download, "KAGGLE_WORKING", tmp_path)
    monkeypatch.setattr(helpers.download, "KAGGLE_WORKING_LIMIT", 5_000)
    (tmp_path / "notes.txt").write_bytes(b"x" * 3_000)
    assert check_disk_space(tmp_path / "llama-3-8B", 2_000) == 2_000
    with pytest.raises(LlamaError, match=r"only 2\.0 kB is free \(Kaggle keeps at most 5\.0 kB in /kaggle/working\)"):
        check_disk_space(tmp_path / "llama-3-8B", 2_001)


def test_corrupted_download_is_deleted_and_never_loaded(hub, tmp_path):
    hub.corrupt = {CHECKPOINT}
    with pytest.raises(LlamaError, match=r"consolidated.00.pth arrived damaged \(its sha256 differs from the hub's\) "
                                         "and was deleted"):
        fetch(hub, tmp_path)
    folder = tmp_path / "original"
    assert not (folder / "consolidated.00.pth").exists() and not is_model_dir(folder)
    with pytest.raises(LlamaError, match="is not a Llama 3 model folder"):
        load_model(folder, verbose=False)


def test_short_download_is_not_taken_for_the_file(hub, tmp_path):
    hub.truncate = {CHECKPOINT}
    with pytest.raises(LlamaError, match=r"arrived incomplete \(16,636,683 bytes instead of 33,273,366\).*"
                                         "resumes from the bytes received"):
        fetch(hub, tmp_path)
    assert not (tmp_path / "original" / "consolidated.00.pth").exists()
    assert not is_model_dir(tmp_path / "original")
    hub.truncate = set()
    fetch(hub, tmp_path)  # the next run asks for the second half only
    assert gets(hub)[-1]["range"] == "bytes=16636683-"
    assert sha256_of(tmp_path / "original" / "consolidated.00.pth") == hub.sha256[CHECKPOINT]


def test_damaged_file_on_disk_is_downloaded_again(hub, tmp_path, capsys):
    folder = fetch(hub, tmp_path)
    path = folder / "consolidated.00.pth"
    os.truncate(path, 1000)
    fetch(hub, tmp_path)
    assert "consolidated.00.pth on disk is damaged (1,000 bytes instead of 33,273,366)" in capsys.readouterr().out
    assert sha256_of(path) == hub.sha256[CHECKPOINT]


def part_files(folder):
    return sorted(folder.glob("*.part"))


def test_a_killed_download_resumes_on_the_next_run(hub, tmp_path):
    """The kernel dies in the middle of the checkpoint; the next run asks only for the rest."""
    hub.stall_after = 12_000_000
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))} | {
        "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(REPO_ROOT)}
    script = f"from helpers import download_llama3; download_llama3({str(tmp_path)!r}, endpoint={hub.url!r})"
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(timeout=120), "the download never reached the stall"
        # Let the child write what it received; it is killed as a stopped kernel would be.
        sizes = []
        while len(sizes) < 3 or sizes[-1] != sizes[-3] or sizes[-1] == 0:
            assert len(sizes) < 200, sizes[-3:]
            time.sleep(0.1)
            sizes.append(sum(p.stat().st_size for p in part_files(tmp_path / "original") if "consolidated" in p.name))
    finally:
        child.kill()
        child.wait()
        hub.release.set()
    (part,) = [p for p in part_files(tmp_path / "original") if p.name.startswith("consolidated.00.pth.")]
    kept = part.stat().st_size
    assert 0 < kept <= 12_000_000
    hub.requests.clear()
    folder = fetch(hub, tmp_path)
    (resumed,) = [r for r in gets(hub) if r["path"].endswith(hub.sha256[CHECKPOINT])]
    assert resumed["range"] == f"bytes={kept}-" and resumed["status"] == 206
    assert resumed["sent"] == hub.size(CHECKPOINT) - kept
    assert sha256_of(folder / "consolidated.00.pth") == hub.sha256[CHECKPOINT]
    assert part_files(folder) == []


def test_a_part_file_of_another_version_is_not_resumed(hub, tmp_path):
    folder = tmp_path / "original"
    folder.mkdir()
    stale = folder / "consolidated.00.pth.0123456789ab.part"  # left by a download of an older revision
    stale.write_bytes(b"x" * 1000)
    fetch(hub, tmp_path)
    assert not stale.exists()
    (request,) = [r for r in gets(hub) if r["path"].endswith(hub.sha256[CHECKPOINT])]
    assert request["range"] is None
    assert sha256_of(folder / "consolidated.00.pth") == hub.sha256[CHECKPOINT]


def test_token_lookup_order(monkeypatch, no_saved_token):
    assert hf_token() is None
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    assert hf_token() == "hf_saved"
    monkeypatch.setattr(helpers.download, "_kaggle_secret", lambda name: "hf_kaggle" if name == "HF_TOKEN" else None)
    assert hf_token() == "hf_kaggle"
    monkeypatch.setenv("HF_TOKEN", " hf_env\n")
    assert hf_token() == "hf_env"


def test_where_am_i(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers.download, "KAGGLE_WORKING", tmp_path / "absent")
    for name in ("KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    assert where_am_i() == "local"
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101")
    assert where_am_i() == "colab"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert where_am_i() == "kaggle"


def test_the_token_never_reaches_the_output(hub, tmp_path, capfd, caplog, monkeypatch):
    """With every huggingface_hub log on, a download that resumes and one that is refused print no token."""
    hub.token, hub.cut_after = TOKEN, 15_000_000
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    fetch(hub, tmp_path / "ok")
    hub.licence_accepted = False
    with pytest.raises(LlamaError) as error:
        fetch(hub, tmp_path / "refused")
    out, err = capfd.readouterr()
    assert "Trying to resume download" in caplog.text + err  # the logs were captured, and are clean
    for text in (out, err, caplog.text, str(error.value)):
        assert TOKEN not in text and TOKEN[3:] not in text


def test_hf_endpoint_and_hf_token_from_the_environment(hub, tmp_path):
    """A fresh Python, configured only by environment variables, as a reader's would be."""
    hub.token = TOKEN
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_VERBOSITY": "debug", "PYTHONPATH": str(REPO_ROOT)}
    script = textwrap.dedent(f"""
        from helpers import download_llama3, hf_token
        print("token:", "found" if hf_token() else "not found")
        download_llama3({str(tmp_path / "dest")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "token: found" in result.stdout and is_model_dir(tmp_path / "dest" / "original")
    assert TOKEN not in result.stdout + result.stderr
    assert {r["authorization"] for r in hub.requests if "/resolve/" in r["path"]} == {f"Bearer {TOKEN}"}


def test_a_disk_error_is_not_blamed_on_the_network(hub, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", disk_full)
    with pytest.raises(LlamaError, match=r"Could not write params.json: \[Errno 28\] No space left on device"):
        fetch(hub, tmp_path)


def test_another_model_downloads_into_its_own_folder_where_find_model_looks(repo_files, no_saved_token,
                                                                             tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(helpers.model, "DOWNLOAD_ROOT", tmp_path)
    monkeypatch.delenv("LLAMA3_DIR", raising=False)
    with HubServer(repo_files, repo_id="meta-llama/Llama-3.2-1B") as hub:
        folder = download_llama3(repo_id="meta-llama/Llama-3.2-1B", endpoint=hub.url)
    assert folder == tmp_path / "Llama-3.2-1B" / "original"
    assert helpers.model.find_model() == folder
    assert "(downloaded by notebook 00)" in capsys.readouterr().out


def test_a_model_the_course_cannot_load_is_refused_before_any_request(tmp_path, no_saved_token):
    with pytest.raises(LlamaError, match=r"'meta-llama/Llama-3.3-70B-Instruct' is not one of the models this "
                                         r"course can load: meta-llama/Meta-Llama-3-8B, "):
        download_llama3(tmp_path, repo_id="meta-llama/Llama-3.3-70B-Instruct", endpoint="http://127.0.0.1:9")
