"""Downloading Meta-Llama-3-8B (or another of `helpers.model.MODELS`) from Hugging Face (notebook 00),
and finding out where we run.

Meta's models are gated: Hugging Face serves them only to an account that has
accepted Meta's licence, and only with that account's token. `download_llama3`:

1. asks the hub for each file's size, sha256, commit and download address
   (HEAD requests, no download yet): a missing or refused token (401) or a
   licence not accepted (403) stops here, with what to do;
2. checks files already on disk; a damaged one is deleted and fetched again;
3. checks the free disk space before it writes a byte;
4. downloads each file into `<name>.<version>.part` with huggingface_hub's
   `http_get`, which draws the progress bar and, when the connection drops,
   asks for the rest with an HTTP Range request. The .part file stays when
   the kernel is stopped, and the next run resumes it from where it ended
   (`hf_hub_download` would start a 16 GB file again from zero);
5. checks every file's size and sha256 against the hub's before it renames
   the .part file: a damaged file is deleted, so that it is never loaded.

The token goes to huggingface_hub only; nothing here prints or logs it.
"""

import hashlib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.file_download
import huggingface_hub.utils

from . import model
from .errors import LlamaError

REPO_ID = model.DEFAULT_REPO
SUBFOLDER = "original"
FILES = ("params.json", "tokenizer.model", "consolidated.00.pth")
SIZE_8B = 16_100_000_000  # about; the hub gives the exact sizes
TOKEN_PAGE = "https://huggingface.co/settings/tokens"
KAGGLE_WORKING = Path("/kaggle/working")
KAGGLE_WORKING_LIMIT = 20 * 10**9  # Kaggle keeps at most 20 GB in /kaggle/working, whatever the disk has free


def where_am_i():
    """'kaggle', 'colab' or 'local': where this Python runs."""
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or KAGGLE_WORKING.is_dir():
        return "kaggle"
    if os.environ.get("COLAB_RELEASE_TAG") or "google.colab" in sys.modules:
        return "colab"
    return "local"


def hf_token():
    """The reader's Hugging Face token, or None. Never print it.

    Looked for in the HF_TOKEN environment variable, then a Kaggle secret
    named HF_TOKEN, then a saved login (`huggingface_hub.login`,
    `notebook_login`, or Colab's HF_TOKEN secret).
    """
    token = os.environ.get("HF_TOKEN") or _kaggle_secret("HF_TOKEN") or huggingface_hub.get_token()
    return token.strip() if token and token.strip() else None


def _kaggle_secret(name):
    try:
        from kaggle_secrets import UserSecretsClient

        return UserSecretsClient().get_secret(name)
    except Exception:  # not on Kaggle, no such secret, or secrets not attached to this notebook
        return None


def free_bytes(folder):
    """Free space where `folder` is (or would be created), within Kaggle's limit for /kaggle/working."""
    folder = Path(folder).absolute()
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if folder.is_relative_to(KAGGLE_WORKING):
        used = sum(f.stat().st_size for f in KAGGLE_WORKING.rglob("*") if f.is_file() and not f.is_symlink())
        free = min(free, KAGGLE_WORKING_LIMIT - used)
    return free


def check_disk_space(folder, needed_bytes):
    """Raise a LlamaError, before anything is written, if `folder` has less than `needed_bytes` free."""
    free = free_bytes(folder)
    if free < needed_bytes:
        kaggle = (f" (Kaggle keeps at most {size(KAGGLE_WORKING_LIMIT)} in /kaggle/working)"
                  if Path(folder).absolute().is_relative_to(KAGGLE_WORKING) else "")
        raise LlamaError(
            f"Not enough disk space: the download needs {size(needed_bytes)} in {model.shown(folder)}, "
            f"but only {size(max(free, 0))} is free{kaggle}. Free some space, or download to another disk "
            "with download_llama3(dest=...) and set LLAMA3_DIR to its original/ folder. On Kaggle, attach "
            "the Kaggle Model instead: it needs no download and no disk space."
        )
    return free


def size(n):
    """A byte count for people: 16.1 GB, 2.2 MB, 211 bytes."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about one file before we download it."""

    name: str
    size: int | None
    sha256: str | None  # the hub gives it for files stored with Git LFS
    commit: str
    url: str  # where the bytes are: the hub itself, or a CDN it redirects to
    send_token: bool  # only to the hub: a CDN's signed address needs none, and must never see it


def remote_files(repo_id=REPO_ID, revision="main", token=None, endpoint=None):
    """Ask the hub (HEAD requests) for the size, sha256, commit and download address of each of `FILES`."""
    found = []
    for name in FILES:
        url = huggingface_hub.hf_hub_url(repo_id, name, subfolder=SUBFOLDER, revision=revision, endpoint=endpoint)
        try:
            meta = huggingface_hub.get_hf_file_metadata(url, token=token)
        except Exception as error:
            raise hub_error(error, repo_id, name, token, endpoint) from None
        etag = (meta.etag or "").lower()
        found.append(RemoteFile(name, meta.size, etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None,
                                meta.commit_hash or revision, meta.location or url,
                                urlsplit(meta.location or url).netloc == urlsplit(url).netloc))
    return found


def download_llama3(dest=None, token=None, repo_id=REPO_ID, revision="main", endpoint=None):
    """Download a model's original/ files (Meta-Llama-3-8B's by default) into `dest`/original.

    Returns that folder. `repo_id` is any of `helpers.model.MODELS`, such as "meta-llama/Llama-3.2-1B".
    `dest` defaults to `helpers.model.download_dir(repo_id)`'s parent: llama-3-8B/ (or Llama-3.2-1B/,
    ...) in the repository (installed with pip: in the working folder), where `find_model` looks.
    `token` defaults to `hf_token()`; `endpoint` to HF_ENDPOINT or huggingface.co.
    """
    if repo_id not in model.MODELS:
        raise LlamaError(f"{repo_id!r} is not one of the models this course can load: "
                         f"{', '.join(model.MODELS)}. Check its spelling.")
    root = Path(dest) if dest is not None else model.download_dir(repo_id).parent
    folder = root / SUBFOLDER
    token = token or hf_token()
    files = remote_files(repo_id, revision, token, endpoint)
    missing = []
    for remote in files:
        path = folder / remote.name
        if path.exists():
            problem = damage(path, remote)
            if problem is None:
                continue
            print(f"{remote.name} on disk is damaged ({problem}): it will be downloaded again.")
            path.unlink()
        missing.append(remote)
    needed = sum(max((remote.size or 0) - _resumable_bytes(folder, remote), 0) for remote in missing)
    check_disk_space(root, needed)
    if missing:
        print(f"Downloading {len(missing)} file{'s' if len(missing) > 1 else ''} of {repo_id} "
              f"({size(needed)}) into {model.shown(folder)}.")
    for remote in missing:
        try:
            _fetch(remote, folder, token)
        except LlamaError:
            raise
        except Exception as error:
            raise hub_error(error, repo_id, remote.name, token, endpoint) from None
    print(f"{model.shown(folder)} holds {', '.join(FILES)}, checked against the hub's sizes and sha256.")
    return folder


def part_file(folder, remote):
    """Where `remote` is downloaded to before it is checked; named after its version, so that a
    later run resumes only a download of the same file."""
    return folder / f"{remote.name}.{(remote.sha256 or remote.commit)[:12]}.part"


def _resumable_bytes(folder, remote):
    """How much of `remote` an earlier, interrupted run left; .part files of other versions are deleted."""
    part = part_file(folder, remote)
    for stale in folder.glob(f"{remote.name}.*.part"):
        if stale != part:
            stale.unlink()
    done = part.stat().st_size if part.exists() else 0
    if remote.size is not None and done > remote.size:
        part.unlink()
        done = 0
    return done


def _fetch(remote, folder, token):
    """Download `remote` into its .part file, resuming it if one is there; check it; rename it."""
    folder.mkdir(parents=True, exist_ok=True)
    part = part_file(folder, remote)
    headers = huggingface_hub.utils.build_hf_headers(token=token if remote.send_token else False)
    done = _resumable_bytes(folder, remote)
    if done:
        print(f"Resuming {remote.name} from {size(done)}, where an earlier run stopped.")
    with open(part, "ab") as f:
        huggingface_hub.file_download.http_get(remote.url, f, resume_size=done, headers=headers,
                                               expected_size=remote.size, displayed_filename=remote.name)
    problem = damage(part, remote)
    if problem:
        part.unlink()
        raise LlamaError(
            f"{remote.name} arrived damaged ({problem}) and was deleted, so that it is never loaded. "
            "Run download_llama3() again; if this happens again, something between you and Hugging Face "
            "(a proxy, a full or failing disk) is changing the data."
        )
    os.replace(part, folder / remote.name)


def damage(path, remote):
    """What is wrong with a local copy of `remote` (wrong size or sha256), or None if nothing is."""
    actual = path.stat().st_size
    if remote.size is not None and actual != remote.size:
        return f"{actual:,} bytes instead of {remote.size:,}"
    if remote.sha256 and sha256_of(path) != remote.sha256:
        return "its sha256 differs from the hub's"
    return None


def sha256_of(path, chunk=1 << 23):
    """The file's sha256, read in 8 MB pieces (about a minute for the 16 GB checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hub_error(error, repo_id, name, token, endpoint):
    """A LlamaError that says what to do about `error`, raised by huggingface_hub for file `name`."""
    status = _status(error)
    page = f"https://huggingface.co/{repo_id}"
    get_token = (
        f"Create a read token at {TOKEN_PAGE} and set HF_TOKEN (on Kaggle: Add-ons > Secrets, a secret "
        "named HF_TOKEN; on Colab: the key icon, a secret named HF_TOKEN), or log in with "
        "huggingface_hub.login() or notebook_login()."
    )
    licence = f"The token's account must also accept the licence at {page}."
    if status == 401 and token:
        return LlamaError(f"Hugging Face refused the token (401 Unauthorized): it is invalid or expired. "
                          f"{get_token} {licence}")
    if status == 401:
        return LlamaError(f"No Hugging Face token (401 Unauthorized): {repo_id} is gated and needs one. "
                          f"{get_token} {licence}")
    if status == 403:
        return LlamaError(
            f"Hugging Face refused access to {repo_id} (403 Forbidden): the licence has not been accepted "
            f"by this token's account. Accept the licence at {page} with the account that owns the token, "
            "wait for the e-mail that grants access, then run this again. A fine-grained token also needs "
            "the permission 'Read access to contents of all public gated repos you can access'."
        )
    if status == 404:
        return LlamaError(f"{repo_id} has no {SUBFOLDER}/{name} (404 Not Found). Check repo_id and revision.")
    where = endpoint or huggingface_hub.constants.ENDPOINT
    detail = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    if sizes := re.search(r"should be of size (\d+) but has size (\d+)", detail):
        # huggingface_hub compared the bytes received with the size the hub announced.
        return LlamaError(
            f"{name} arrived incomplete ({int(sizes[2]):,} bytes instead of {int(sizes[1]):,}): the connection "
            "ended early. Run download_llama3() again: it resumes from the bytes received, which are kept in "
            f"a .part file beside it, and keeps the files already complete."
        )
    if status is not None:
        return LlamaError(f"Hugging Face answered {status} for {name} ({detail}). Try again later.")
    if isinstance(error, OSError) and error.errno is not None:  # the local disk, not the network
        return LlamaError(f"Could not write {name}: {detail}. The files already complete are kept.")
    return LlamaError(
        f"Could not download {name} from {where}: {detail}. Check the internet connection (on Kaggle: "
        "Settings > Internet on, which needs a phone-verified account) and run this again: the files "
        "already complete are kept. Or attach the Kaggle Model instead of downloading."
    )


def _status(error):
    """The HTTP status behind a huggingface_hub error, following the chain of causes; None if none."""
    while error is not None:
        response = getattr(error, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return response.status_code
        error = error.__cause__ or error.__context__
    return None

