"""A stand-in for huggingface.co on 127.0.0.1, to test the download code without a network.

It answers like the hub does for `/{repo}/resolve/{revision}/{path}`:

- a small file: 200 with ETag (the git blob id), Content-Length and X-Repo-Commit;
- a Git LFS file: 302 to a second server (the "CDN", another origin, so that
  huggingface_hub drops the token as it does for the real CDN), with
  X-Linked-Size, X-Linked-Etag (the sha256) and X-Repo-Commit;
- errors with the X-Error-Code / X-Error-Message headers that huggingface_hub
  turns into GatedRepoError and friends.

Both servers honour Range requests. Switches, set between requests:

- `token`: None for a public repo; a string makes the repo gated: no token
  gives 401, another token gives 401 "Invalid credentials";
- `licence_accepted = False`: the right token gets 403 GatedRepo;
- `cut_after = n`: the next GET of an LFS file stops after n bytes and drops
  the connection (once);
- `stall_after = n`: the next GET of an LFS file sends n bytes, sets the
  event `stalled`, then sends nothing more until `release` is set (once): a
  download that hangs there until its process is killed;
- `corrupt` / `truncate`: names of LFS files whose bytes the CDN damages
  (one byte flipped, or the second half missing) while the hub still
  advertises the true size and sha256.

Every request is appended to `requests` as a dict: server ("hub" or "cdn"),
method, path, range, authorization, status and the number of body bytes sent.
"""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from helpers.download import sha256_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_FILES = ("tokenizer.model", "consolidated.00.pth")


class HubServer:
    def __init__(self, files, repo_id="meta-llama/Meta-Llama-3-8B"):
        """`files` maps a path in the repo (such as "original/params.json") to a local file.

        Files are read in 1 MiB pieces as they are served: a test process that holds
        whole checkpoints in memory would skew the memory measurements of other tests.
        """
        self.files = {path: Path(local) for path, local in files.items()}
        self.repo_id = repo_id
        self.sha256 = {path: sha256_of(local) for path, local in self.files.items()}
        self.lfs = {path for path in self.files if path.rsplit("/", 1)[-1] in LFS_FILES}
        self.token = None
        self.licence_accepted = True
        self.cut_after = None
        self.stall_after = None
        self.stalled, self.release = threading.Event(), threading.Event()
        self.corrupt = set()
        self.truncate = set()
        self.requests = []
        self._servers = {role: ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for role in ("hub", "cdn")}
        for role, server in self._servers.items():
            server.hub, server.role, server.daemon_threads = self, role, True

    def address(self, role):
        host, port = self._servers[role].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self):
        """The endpoint to give huggingface_hub (HF_ENDPOINT)."""
        return self.address("hub")

    def __enter__(self):
        for server in self._servers.values():
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def denied(self, authorization):
        """(status, X-Error-Code, message) when the request may not see the files, else None."""
        if self.token is None:
            return None
        given = authorization.removeprefix("Bearer ") if authorization else None
        if given is None:
            return 401, "GatedRepo", (f"Access to model {self.repo_id} is restricted. You must have access to it "
                                      "and be authenticated to access it. Please log in.")
        if given != self.token:
            return 401, None, "Invalid credentials in Authorization header"
        if not self.licence_accepted:
            return 403, "GatedRepo", (f"Access to model {self.repo_id} is restricted and you are not in the "
                                      f"authorized list. Visit https://huggingface.co/{self.repo_id} to ask for "
                                      "access.")
        return None

    def size(self, path):
        return self.files[path].stat().st_size


def git_blob_id(path):
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_HEAD(self):
        self.handle_request(body=False)

    def do_GET(self):
        self.handle_request(body=True)

    def handle_request(self, body):
        hub = self.server.hub
        self.record = {"server": self.server.role, "method": self.command, "path": urlsplit(self.path).path,
                       "range": self.headers.get("Range"), "authorization": self.headers.get("Authorization"),
                       "status": None, "sent": 0}
        hub.requests.append(self.record)
        path = unquote(self.record["path"])
        if self.server.role == "cdn":
            by_sha = {sha: name for name, sha in hub.sha256.items()}
            name = by_sha.get(path.removeprefix("/"))
            if name is None:
                return self.error(404, None, "Not found", body)
            return self.send_file(name, {"ETag": f'"{hub.sha256[name]}"'}, body, cdn=True)

        prefix = f"/{hub.repo_id}/resolve/"
        if not path.startswith(prefix):
            return self.error(404, "RepoNotFound", "Repository not found", body)
        revision, _, name = path[len(prefix):].partition("/")
        if revision not in ("main", COMMIT):
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        denied = hub.denied(self.headers.get("Authorization"))
        if denied:
            return self.error(*denied, body)
        if name not in hub.files:
            return self.error(404, "EntryNotFound", f"{name} does not exist on {revision}", body)
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        if name in hub.lfs:
            sha = hub.sha256[name]
            return self.reply(302, headers | {
                "Location": f"{hub.address('cdn')}/{sha}", "ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(hub.size(name)), "Content-Length": "0"})
        return self.send_file(name, headers | {"ETag": f'"{git_blob_id(hub.files[name])}"'}, body)

    def reply(self, status, headers):
        self.record["status"] = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def error(self, status, code, message, body):
        payload = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, headers)
        if body:
            self.wfile.write(payload)

    def send_file(self, name, headers, body, cdn=False):
        """Send file `name`, or the part a Range header asks for; the CDN applies the damage switches."""
        hub = self.server.hub
        size = hub.size(name) // 2 if cdn and name in hub.truncate else hub.size(name)
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            start = int(match[1])
            end = min(int(match[2]), end) if match[2] else end
            if start >= size:
                return self.reply(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            status, headers = 206, headers | {"Content-Range": f"bytes {start}-{end}/{size}"}
        length = end + 1 - start
        self.reply(status, headers | {"Accept-Ranges": "bytes", "Content-Length": str(length)})
        if not body:
            return
        if cdn and hub.cut_after is not None and hub.cut_after < length:
            length, hub.cut_after = hub.cut_after, None
            self.close_connection = True
        stall = None
        if cdn and hub.stall_after is not None and hub.stall_after < length:
            length = stall = hub.stall_after
            hub.stall_after = None
            self.close_connection = True
        flip = hub.size(name) // 2 if cdn and name in hub.corrupt else None
        try:
            with open(hub.files[name], "rb") as f:
                f.seek(start)
                while self.record["sent"] < length:
                    offset = start + self.record["sent"]
                    piece = bytearray(f.read(min(1 << 20, length - self.record["sent"])))
                    if flip is not None and offset <= flip < offset + len(piece):
                        piece[flip - offset] ^= 0xFF
                    self.wfile.write(piece)
                    self.record["sent"] += len(piece)
            self.wfile.flush()
            if stall is not None:
                hub.stalled.set()
                hub.release.wait(timeout=60)
        except ConnectionError:
            self.close_connection = True
