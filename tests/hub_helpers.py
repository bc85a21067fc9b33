"""A stand-in for the Hugging Face hub, for tests without network: `build_hub_cache` writes huggingface_hub's
cache layout, `HubServer` serves repositories over HTTP on 127.0.0.1 the way huggingface_hub (2.4) reads the hub,
and records every request it sees."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

# Stored in git LFS on the hub (their ETag is their sha256); other files are plain git blobs (ETag: git sha1).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5", ".npz")
COMMIT = re.compile(r"[0-9a-f]{40}")


def is_lfs(filename: str) -> bool:
    return filename.endswith(LFS_SUFFIXES)


def git_sha1(data: bytes) -> str:
    """The git blob id of `data`: what the hub states as the ETag of a file not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag(filename: str, data: bytes) -> str:
    """The hub's ETag of a file, which huggingface_hub names its cached blob by."""
    return hashlib.sha256(data).hexdigest() if is_lfs(filename) else git_sha1(data)


def commit_of(files: dict[str, bytes]) -> str:
    """A commit hash that stands for these files (40 hex digits, as the hub's)."""
    return hashlib.sha1(json.dumps(sorted((n, etag(n, d)) for n, d in files.items())).encode()).hexdigest()


def repo_dir(cache_dir: str | os.PathLike, repo: str) -> Path:
    return Path(cache_dir) / f"models--{repo.replace('/', '--')}"


def build_hub_cache(cache_dir: str | os.PathLike, repo: str, files: dict[str, bytes], revision: str = "main") -> str:
    """Writes `files` of `repo` into a hub cache as huggingface_hub does (blobs/<etag>, refs/<revision> holding the
    commit, snapshots/<commit>/<file> relative links to the blobs); returns the commit. A 40-hex `revision` is the
    commit itself (no ref, as huggingface_hub writes none then)."""
    storage = repo_dir(cache_dir, repo)
    commit = revision if COMMIT.fullmatch(revision) else commit_of(files)
    for name, data in files.items():
        blob = storage / "blobs" / etag(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = storage / "snapshots" / commit / name
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    if revision != commit:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / revision).write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


def isolate_hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """huggingface_hub on `cache`, online, with no token, no endpoint override and no telemetry call to the real
    hub (its user agent fetches an agent registry from huggingface.co once per process)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache.parent / "no-token"))  # a developer's login stays out
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)


def skip_retry_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """huggingface_hub's retries (after a refused connection, before resuming a cut download) without their
    sleeps (1 s, 2 s, ... 8 s); returns the list the waits it asked for go to."""
    import huggingface_hub.file_download
    import huggingface_hub.utils._http

    waits: list[float] = []
    for module in (huggingface_hub.utils._http, huggingface_hub.file_download):
        monkeypatch.setattr(module, "time", SimpleNamespace(sleep=waits.append))
    return waits


@dataclass
class Seen:
    """A request the server answered."""

    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubRepo:
    """A repository's files at one commit, under `revision`; with `token`, a gated one: files only for it."""

    files: dict[str, bytes]
    revision: str = "main"
    token: str | None = None

    @property
    def commit(self) -> str:
        return commit_of(self.files)


@dataclass
class HubServer:
    """The hub's file protocol on 127.0.0.1, in a thread (use as a context manager).

    HEAD / GET /{repo}/resolve/{revision}/{file}: X-Repo-Commit, ETag (and X-Linked-Etag / X-Linked-Size for LFS
    files, their sha256 and size), Content-Length, Range (206); errors with the hub's X-Error-Code (RepoNotFound,
    GatedRepo, RevisionNotFound, EntryNotFound). GET /api/models/{repo}[/revision/{revision}] (model_info: sha,
    siblings) and /api/models/{repo}/tree/{revision} (list_repo_files). Faults: a file in `cut_once` is sent half
    and the connection closed, once; a file in `corrupt` is served with other bytes than its ETag states."""

    repos: dict[str, HubRepo] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    cut_once: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main", token: str | None = None) -> str:
        self.repos[repo] = HubRepo(dict(files), revision, token)
        return self.repos[repo].commit

    def fetched(self, method: str = "GET") -> list[str]:
        """The files requested with `method`, in order, as `repo/file`."""
        hits = (re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", s.path) for s in self.seen if s.method == method)
        return [f"{m[1]}/{m[2]}" for m in hits if m]

    def __enter__(self) -> HubServer:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, so a cut body ends at the connection's close."""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub: HubServer = self.server.hub  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path)
        hub.seen.append(Seen(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
            self._api(hub, m[1], m[2], tree=True, body=body)
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            self._api(hub, m[1], m[2] or "main", tree=False, body=body)
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(hub, m[1], m[2], m[3], body)
        else:
            self._error(404, None, "not a hub route", None, body)

    def _repo(self, hub: HubServer, repo_id: str, revision: str, body: bool) -> HubRepo | None:
        """The repository if this request may read it at `revision`; else the hub's error is sent."""
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found", None, body)
            return None
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            status = 403 if self.headers.get("Authorization") else 401
            self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted", None, body)
            return None
        if revision not in (repo.revision, repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id", None, body)
            return None
        return repo

    def _api(self, hub: HubServer, repo_id: str, revision: str, tree: bool, body: bool) -> None:
        repo = self._repo(hub, repo_id, revision, body)
        if repo is None:
            return
        entries = []
        for name, data in sorted(repo.files.items()):
            lfs = {"oid": etag(name, data), "size": len(data), "pointerSize": 134} if is_lfs(name) else None
            entries.append({"type": "file", "path": name, "rfilename": name, "size": len(data),
                            "oid": git_sha1(data), "blobId": git_sha1(data),
                            **({"lfs": {**lfs, "sha256": lfs["oid"]}} if lfs else {})})
        listing: Any = entries if tree else {"id": repo_id, "sha": repo.commit, "siblings": entries}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(listing).encode(), body)

    def _resolve(self, hub: HubServer, repo_id: str, revision: str, filename: str, body: bool) -> None:
        repo = self._repo(hub, repo_id, revision, body)
        if repo is None:
            return
        if filename not in repo.files:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}", repo.commit, body)
            return
        data = repo.files[filename]
        tag = etag(filename, data)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{tag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if is_lfs(filename):
            headers |= {"X-Linked-Etag": f'"{tag}"', "X-Linked-Size": str(len(data))}
        if body and filename in hub.corrupt:
            data = bytes(b ^ 0xFF for b in data)  # same size, other bytes
        status, start = 200, 0
        if body and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")):
            start, end = int(m[1]), int(m[2] or len(data) - 1)
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
        if body and filename in hub.cut_once:
            hub.cut_once.discard(filename)
            self._send(status, headers | {"Content-Length": str(len(data))}, data[: len(data) // 2], body)
            return
        self._send(status, headers, data, body)

    def _error(self, status: int, code: str | None, message: str, commit: str | None, body: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        headers |= {"X-Error-Code": code} if code else {}
        headers |= {"X-Repo-Commit": commit} if commit else {}
        self._send(status, headers, json.dumps({"error": message}).encode(), body)

    def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(data)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
