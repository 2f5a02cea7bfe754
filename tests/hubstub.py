"""A fake Hugging Face Hub for offline tests: the HTTP endpoints huggingface_hub (2.x) calls for
`create_repo`, `create_branch`, `upload_folder`, `list_repo_files`, `repo_info`, `snapshot_download`
and `hf_hub_download`, served from memory on 127.0.0.1.

    with HubStub(token="hf_test") as hub:   # hub.url = http://127.0.0.1:PORT
        ...point huggingface_hub at hub.url (HF_ENDPOINT) and use the token...

What it implements like the Hub: repos with branches and commits (sha1 ids), an initial commit with
`.gitattributes`, private repos hidden from callers without the token, bearer-token checks on every
write (401) and namespaces you may write to (403), the preupload answer with the remote file's git
oid (so unchanged files are skipped), NDJSON commits with base64 files and deletions, the README
YAML validation endpoint, recursive tree listings, `X-Repo-Commit`/`ETag`/`X-Error-Code` headers on
file resolution, and 404s with the Hub's error codes (RepoNotFound, RevisionNotFound, EntryNotFound).

What it does not: every file is uploaded "regular" (base64 inside the commit), never through
LFS or Xet storage, so the large-file upload path of the real Hub is not exercised; no rate
limits, pagination, pull requests, tags, gated repos, redirects to a CDN or real user accounts.
It is bounded: it binds 127.0.0.1 only, refuses bodies over `max_body` bytes and stops storing
past `max_total` bytes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    """The git blob sha1, which the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str
    parent: str | None
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.extra = status, message, code, commit, extra or {}


class HubStub:
    def __init__(self, token: str = "hf_stub_token", *, namespaces: set[str] | None = None,
                 max_body: int = 192 << 20, max_total: int = 768 << 20) -> None:
        self.token = token
        self.namespaces = namespaces  # None: any namespace may be written with the token
        self.max_body, self.max_total = max_body, max_total
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched (should stay empty)
        # called as on_request(method, path) before each request is answered (outside the lock): a test can
        # change the repo between two requests of one command, as a concurrent push would
        self.on_request = None
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStub:
        stub = self

        class Handler(_Handler):
            hub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hubstub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ state helpers

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (for assertions)."""
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision}"
        return dict(commit.files)

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False, branch: str = "main",
                 message: str = "seeded by the test") -> Repo:
        """Put a repo on the stub directly (e.g. a base model, with files sedpa must not download)."""
        with self.lock:
            repo = self.repos.get(repo_id) or Repo(repo_id=repo_id, private=private)
            self.repos[repo_id] = repo
            head = repo.resolve(branch) or repo.resolve("main")
            self._commit(repo, branch, {".gitattributes": GITATTRIBUTES, **(head.files if head else {}), **files},
                         message, head.sha if head else None)
            return repo

    def stored_bytes(self) -> int:
        return sum(len(b) for r in self.repos.values() for c in r.commits.values() for b in c.files.values())

    def _commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str, parent: str | None) -> Commit:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", ".000Z")
        digest = hashlib.sha1(json.dumps([parent, message, now, len(repo.commits),
                                          sorted((p, git_oid(b)) for p, b in files.items())]).encode()).hexdigest()
        commit = Commit(sha=digest, files=files, message=message, parent=parent, date=now)
        repo.commits[digest] = commit
        repo.branches[branch] = digest
        return commit


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"
    server_version = "HubStub/1.0"

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > self.hub.max_body:
                    raise HubError(413, "request body too large for the stub")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.hub.max_body:
            raise HubError(413, "request body too large for the stub")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _authorized(self) -> bool | None:
        """True: the stub's token; False: a wrong token; None: no token."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        return auth == f"Bearer {self.hub.token}"

    def _require_write(self, namespace: str) -> None:
        auth = self._authorized()
        if auth is None:
            raise HubError(401, "You must be authenticated to access this resource")
        if auth is False:
            raise HubError(401, "Invalid credentials in Authorization header")
        if self.hub.namespaces is not None and namespace not in self.hub.namespaces:
            raise HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        if self._authorized() is False:
            raise HubError(401, "Invalid credentials in Authorization header")
        if write:
            self._require_write(repo_id.split("/")[0])
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and self._authorized() is not True):
            status = 404 if self._authorized() is True else 401  # the Hub hides repos from anonymous callers
            raise HubError(status, "Repository not found", code="RepoNotFound")
        return repo

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self.hub.lock:
            self.hub.requests.append((method, parts.path))
        if self.hub.on_request is not None:
            self.hub.on_request(method, parts.path)
        try:
            body = self._body() if method in ("POST", "PUT") else b""
            with self.hub.lock:
                self._route(method, path, parts.path, query, body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._json(err.status, {"error": err.message, **err.extra}, headers)
        except (ValueError, KeyError, TypeError) as err:
            self._json(400, {"error": f"bad request: {err}"}, {"X-Error-Message": f"bad request: {err}"})

    # ------------------------------------------------------------------ routes

    def _route(self, method: str, path: str, raw_path: str, query: dict, body: bytes) -> None:
        seg = [s for s in raw_path.split("/") if s]  # route on the raw path: revisions and files are %-quoted
        dq = [unquote(s) for s in seg]
        if method == "GET" and path == "/api/whoami-v2":
            if self._authorized() is not True:
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": "stub-user", "orgs": [], "auth": {"type": "access_token"}})
        if method == "GET" and path == "/api/agent-harnesses":
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if len(seg) >= 4 and seg[0] == "api" and seg[1] == "models":
            repo_id = f"{dq[2]}/{dq[3]}"
            rest = seg[4:]
            if method == "GET" and not rest:
                return self._info(repo_id, "main")
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._info(repo_id, unquote(rest[1]))
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                return self._create_branch(repo_id, unquote(rest[1]), json.loads(body or b"{}"))
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo_id, unquote(rest[1]), json.loads(body))
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(repo_id, unquote(rest[1]), body)
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                sub = "/".join(unquote(s) for s in rest[2:])
                return self._tree(repo_id, unquote(rest[1]), sub, query.get("recursive", ["False"])[0].lower() == "true")
        if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
            return self._resolve(f"{dq[0]}/{dq[1]}", unquote(seg[3]), "/".join(dq[4:]))
        self.hub.unhandled.append((method, raw_path))
        raise HubError(404, f"the hub stub does not implement {method} {raw_path}")

    def _create_repo(self, payload: dict) -> None:
        namespace, name = payload.get("organization"), payload["name"]
        if not namespace:
            namespace = "stub-user"
        self._require_write(namespace)
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "the hub stub only hosts model repos")
        repo_id = f"{namespace}/{name}"
        url = f"{self._base()}/{repo_id}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this model repo", extra={"url": url})
        repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self.hub.repos[repo_id] = repo
        self.hub._commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit", None)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            try:
                meta = yaml.safe_load(content[3:end]) if end > 0 else None
                if end < 0 or not isinstance(meta, dict):
                    errors.append("metadata is not a YAML mapping")
                elif not isinstance(meta.get("tags", []), list):
                    errors.append('"tags" must be an array')
            except yaml.YAMLError as err:
                errors.append(f"invalid YAML: {err}")
        if errors:
            return self._json(400, {"error": "; ".join(errors)}, {"X-Error-Message": "; ".join(errors)})
        warnings = [] if content.startswith("---") else [{"message": "empty or missing yaml metadata in repo card"}]
        self._json(200, {"errors": [], "warnings": warnings})

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        repo = self._repo(repo_id, write=True)
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        start = repo.resolve(payload.get("startingPoint") or "main")
        if start is None:
            raise HubError(404, "Invalid rev id", code="RevisionNotFound")
        repo.branches[branch] = start.sha
        self._json(200, {})

    def _head(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._repo(repo_id, write=True)
        commit = self._head(repo, revision)
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_oid(commit.files[f["path"]]) if f["path"] in commit.files else None}
                 for f in payload["files"]]
        self._json(200, {"files": files, "commitOid": commit.sha})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._repo(repo_id, write=True)
        head = self._head(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"{revision} is not a branch", code="RevisionNotFound")
        files = dict(head.files)
        message, parent = "", None
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message, parent = value["summary"], value.get("parentCommit")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                raise HubError(400, "the hub stub answered 'regular' for every file: no LFS uploads")
            else:
                raise HubError(400, f"unknown commit key {key}")
        if parent and not head.sha.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        if self.hub.stored_bytes() + sum(len(b) for b in files.values()) > self.hub.max_total:
            raise HubError(413, "the hub stub stores at most max_total bytes")
        commit = self.hub._commit(repo, revision, files, message, head.sha)
        self._json(200, {"success": True, "commitOid": commit.sha, "commitUrl": f"{self._base()}/{repo_id}/commit/{commit.sha}",
                         "pullRequestUrl": None, "hookOutput": ""})

    def _tree(self, repo_id: str, revision: str, sub: str, recursive: bool) -> None:
        repo = self._repo(repo_id)
        commit = self._head(repo, revision)
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries, folders = [], set()
        for p in sorted(commit.files):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):]
            if "/" in rel:
                top = prefix + rel.split("/")[0]
                if top not in folders:
                    folders.add(top)
                    entries.append({"type": "directory", "oid": hashlib.sha1(top.encode()).hexdigest(), "size": 0,
                                    "path": top})
                if not recursive:
                    continue
            data = commit.files[p]
            entries.append({"type": "file", "oid": git_oid(data), "size": len(data), "path": p})
        self._json(200, entries)

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        commit = self._head(repo, revision)
        self._json(200, {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                         "author": repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
                         "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "tags": [], "library_name": "transformers",
                         "siblings": [{"rfilename": p} for p in sorted(commit.files)]})

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(repo_id)
        commit = self._head(repo, revision)
        data = commit.files.get(filename)
        if data is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", commit=commit.sha)
        self._send(200, data, {"X-Repo-Commit": commit.sha, "ETag": f'"{git_oid(data)}"'},
                   content_type="application/octet-stream")

    def _base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def point_huggingface_hub_at(monkeypatch, url: str, home, *, token: str | None, symlinks: bool = False) -> None:
    """Point this process's huggingface_hub at `url` (a HubStub or a closed port) with `token`, and keep
    its cache, stored token and agent registry under `home`. huggingface_hub reads HF_ENDPOINT and
    HF_HOME at import, so the constants are patched as well as the environment (subprocesses get the env).

    `symlinks=False` makes the cache hold copies instead of symlinks into blobs/ (HF_HUB_DISABLE_SYMLINKS)."""
    import os

    import huggingface_hub.constants as C

    home = str(home)
    env = {"HF_ENDPOINT": url, "HF_HOME": home, "HF_HUB_CACHE": os.path.join(home, "hub"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_SYMLINKS_WARNING": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    if not symlinks:
        monkeypatch.setenv("HF_HUB_DISABLE_SYMLINKS", "1")
    monkeypatch.setattr(C, "HF_HUB_DISABLE_SYMLINKS", not symlinks)
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(C, "ENDPOINT", url)
    monkeypatch.setattr(C, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(C, "HF_HOME", home)
    monkeypatch.setattr(C, "HF_HUB_CACHE", os.path.join(home, "hub"))
    monkeypatch.setattr(C, "HF_TOKEN_PATH", os.path.join(home, "token"))
    monkeypatch.setattr(C, "HF_STORED_TOKENS_PATH", os.path.join(home, "stored_tokens"))
    monkeypatch.setattr(C, "AGENT_HARNESSES_PATH", os.path.join(home, ".agent_harnesses.json"))
    monkeypatch.setenv("HF_XET_CACHE", os.path.join(home, "xet"))
    monkeypatch.setattr(C, "HF_XET_CACHE", os.path.join(home, "xet"))


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was just released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
