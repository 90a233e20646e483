"""A small, in-memory, Hugging Face Hub-compatible HTTP server for offline tests.

The real ``huggingface_hub`` client (and ``transformers`` on top of it) talks to it through
``HF_ENDPOINT`` / ``HfApi(endpoint=...)``, exactly as it would talk to https://huggingface.co, so
tests exercise the real upload and download code paths without any network access.

Usage::

    from hub_server import HubServer

    with HubServer() as hub:                       # starts on 127.0.0.1, random free port
        hub.endpoint                               # "http://127.0.0.1:PORT"
        hub.token                                  # a valid write token for ``hub.username``
        ...                                        # push / download with the real client
        hub.files("user/my-model")                 # {path: bytes} at the head of main
        hub.commits("user/my-model")               # list of HubCommit, oldest first
        hub.requests                               # [(method, path), ...] seen by the server

    # In pytest, point the in-process client at the server (the suite runs with HF_HUB_OFFLINE=1):
    def test_x(monkeypatch, tmp_path):
        with HubServer() as hub:
            hub.patch_client(monkeypatch)          # env + huggingface_hub.constants, undone after the test
            env = hub.subprocess_env(tmp_path)     # env for a child process (own HF_HOME, online)

    # or the ready-made fixture ``hub``: ``from hub_server import hub_fixture  # noqa: F401`` in a test
    # module or conftest, then ``def test_x(hub): ...``.

Endpoints served (those ``huggingface_hub`` 1.x/2.x calls for create/upload/download/cards):

    POST   /api/repos/create                          create a repo (initial commit with .gitattributes)
    DELETE /api/repos/delete                          delete a repo
    GET    /api/whoami-v2                             who owns the token
    POST   /api/validate-yaml                         model-card metadata validation
    GET    /api/{models|datasets|spaces}/{repo}[/revision/{rev}]     repo info (sha, siblings, cardData)
    GET    /api/{type}s/{repo}/tree/{rev}[/{path}]    tree listing (``recursive``)
    GET    /api/{type}s/{repo}/commits/{rev}          commit history
    POST   /api/{type}s/{repo}/preupload/{rev}        upload modes ("regular" unless ``lfs_patterns``)
    POST   /api/{type}s/{repo}/commit/{rev}           NDJSON commit: header/file/lfsFile/deletedFile/deletedFolder
    POST   /{repo}.git/info/lfs/objects/batch         git-LFS batch API ("basic" transfer) + PUT upload + verify
    GET|HEAD /[{type}s/]{repo}/resolve/{rev}/{path}   file download with X-Repo-Commit, ETag, X-Linked-Etag/Size

Behaviour that mirrors the real Hub: write endpoints need ``Authorization: Bearer <token>`` (401 with
a JSON ``error`` otherwise), private repos are invisible without a valid token, errors carry the
``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) the client maps to
its exception types, every commit gets a new 40-hex sha, and ``README.md`` metadata is validated on
commit. Revisions: ``main`` and any commit sha (or a >= 7 character prefix). Not implemented: pull
requests, branches and tags other than ``main``, Xet storage (with ``lfs_patterns`` set, the client
must run with ``HF_HUB_DISABLE_XET=1``; ``patch_client`` and ``subprocess_env`` do that).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import mimetypes
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = [
    "HubCommit",
    "HubServer",
    "StoredFile",
    "free_port",
    "hub_fixture",
    "validate_card_metadata",
]

# The .gitattributes the real Hub commits when it creates a repo (abridged: same idea, fewer patterns).
_INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    b"*.npy filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pkl filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.zip filter=lfs diff=lfs merge=lfs -text\n"
)

# Licence ids the Hub accepts in card metadata (a subset of https://huggingface.co/docs/hub/repositories-licenses).
KNOWN_LICENSES = frozenset(
    {
        "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0",
        "cc-by-2.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
        "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc-by-nd-4.0",
        "gpl", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "epl-2.0",
        "afl-3.0", "artistic-2.0", "bsl-1.0", "isc", "unlicense", "wtfpl", "zlib", "openrail",
        "openrail++", "creativeml-openrail-m", "bigscience-openrail-m", "llama2", "llama3",
        "gemma", "odc-by", "pddl", "other", "unknown",
    }
)  # fmt: skip

# Pipeline tags (Hub task ids) accepted for ``pipeline_tag``.
KNOWN_PIPELINE_TAGS = frozenset(
    {
        "audio-classification", "audio-to-audio", "automatic-speech-recognition", "text-to-speech",
        "image-classification", "image-segmentation", "object-detection", "image-to-text",
        "image-text-to-text", "image-feature-extraction", "image-to-image", "text-to-image",
        "video-classification", "video-text-to-text", "visual-question-answering",
        "zero-shot-image-classification", "zero-shot-classification", "text-classification",
        "token-classification", "question-answering", "fill-mask", "feature-extraction",
        "sentence-similarity", "summarization", "translation", "text-generation",
        "text2text-generation", "tabular-classification", "tabular-regression",
        "time-series-forecasting", "any-to-any", "audio-text-to-text", "graph-ml",
        "reinforcement-learning", "robotics", "depth-estimation", "mask-generation",
        "keypoint-detection", "zero-shot-object-detection", "other",
    }
)  # fmt: skip

_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_SHA_PREFIX = re.compile(r"^[0-9a-f]{7,40}$")
_REPO_TYPE_BY_PREFIX = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX_BY_REPO_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (also handy to test 'endpoint unreachable')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob, which is what the Hub reports as a regular file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """One file version stored in a repo. LFS files keep their content too (no separate CDN)."""

    data: bytes
    is_lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def lfs_pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        ).encode()

    @property
    def git_oid(self) -> str:
        # An LFS file's git blob is its pointer file, as on the real Hub.
        return _git_blob_oid(self.lfs_pointer if self.is_lfs else self.data)


@dataclass
class HubCommit:
    """A commit on ``main``: a full snapshot of the repo's files after the commit."""

    oid: str
    title: str
    message: str
    parent: str | None
    files: dict[str, StoredFile]
    author: str
    date: str = field(default_factory=_now_iso)


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    owner: str
    created_at: str = field(default_factory=_now_iso)
    commits: list[HubCommit] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content, uploaded via LFS

    @property
    def head(self) -> HubCommit:
        return self.commits[-1]


class _HubError(Exception):
    """An HTTP error answered the way the Hub does (status, JSON body, X-Error-* headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.body = body if body is not None else {"error": message}


def validate_card_metadata(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    """Validate a repo card's YAML metadata like the Hub does, within reason.

    Returns ``(errors, warnings)``. Checks: the front matter parses to a mapping; ``license`` is a
    known licence id; list-valued fields (``tags``, ``datasets``, ``metrics``, ``language``,
    ``base_model``) are strings or lists of strings; ``pipeline_tag`` is a known task id; and
    ``model-index`` is well formed (name, results, task.type, dataset.type/name, metrics with
    type and a numeric or string value).
    """
    errors: list[str] = []
    warnings: list[str] = []
    match = _YAML_BLOCK.search(content)
    if match is None:
        warnings.append("Empty or missing yaml metadata in repo card")
        return errors, warnings
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as error:
        return [f"Invalid YAML in the metadata block: {error}"], warnings
    if metadata is None:
        warnings.append("Empty or missing yaml metadata in repo card")
        return errors, warnings
    if not isinstance(metadata, dict):
        return ["The metadata block must be a YAML mapping"], warnings

    def is_str_or_str_list(value: Any) -> bool:
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))

    for key in ("tags", "datasets", "metrics", "language", "base_model"):
        if key in metadata and not is_str_or_str_list(metadata[key]):
            errors.append(f'"{key}" must be a string or a list of strings (got {metadata[key]!r})')
    if "license" in metadata:
        license_id = metadata["license"]
        if not isinstance(license_id, str) or license_id.lower() not in KNOWN_LICENSES:
            errors.append(f'"license" must be one of the Hub licence ids (got {license_id!r})')
    if "library_name" in metadata and not isinstance(metadata["library_name"], str):
        errors.append('"library_name" must be a string')
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a Hub task id (got {metadata["pipeline_tag"]!r})')
    if repo_type == "model" and "model-index" in metadata:
        errors.extend(_model_index_errors(metadata["model-index"]))
    return errors, warnings


def _model_index_errors(model_index: Any) -> list[str]:
    if not isinstance(model_index, list) or not model_index:
        return ['"model-index" must be a non-empty list']
    errors: list[str] = []
    for i, entry in enumerate(model_index):
        where = f"model-index[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'{where}: "name" (string) is required')
            continue
        results = entry.get("results")
        if not isinstance(results, list):
            errors.append(f'{where}: "results" must be a list')
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                errors.append(f"{at}: must be a mapping")
                continue
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'{at}.task: "type" (string) is required')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
                errors.append(f'{at}.dataset: "type" and "name" (strings) are required')
            if not isinstance(metrics, list) or not metrics:
                errors.append(f"{at}.metrics: must be a non-empty list")
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
                    errors.append(f'{at}.metrics[{k}]: "type" (string) is required')
                elif isinstance(metric.get("value"), bool) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append(f'{at}.metrics[{k}]: "value" must be a number or a string')
    return errors


class HubServer:
    """An in-memory Hub on 127.0.0.1 in a background thread; use as a context manager.

    Args:
        username: the user the default ``token`` belongs to (repos created without a namespace go there).
        token: the default write token; random ``hf_...`` when omitted.
        lfs_patterns: fnmatch patterns of paths the preupload endpoint sends through LFS
            (e.g. ``("*.safetensors",)``); default: every file is uploaded "regular" (base64 in the
            commit), which needs no Xet/LFS support from the client.
        restrict_namespaces: when true, a token may only write under its user's namespace (403
            otherwise, like the Hub); by default any valid token may write anywhere.
    """

    def __init__(
        self,
        username: str = "hf-dimml-tester",
        token: str | None = None,
        lfs_patterns: tuple[str, ...] = (),
        restrict_namespaces: bool = False,
    ) -> None:
        self.username = username
        self.token = token or "hf_" + secrets.token_hex(16)
        self.lfs_patterns = tuple(lfs_patterns)
        self.restrict_namespaces = restrict_namespaces
        self.requests: list[tuple[str, str]] = []
        self._tokens: dict[str, str] = {self.token: username}
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._commit_counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_HubRequestHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not running: use `with HubServer() as hub:` or call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ----------------------------------------------------------------- test helpers

    def add_token(self, username: str, token: str | None = None) -> str:
        """Register another user's token and return it."""
        token = token or "hf_" + secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = username
        return token

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """``{path: content}`` of every file (``.gitattributes`` included) at ``revision``."""
        with self._lock:
            commit = self._resolve_revision(self._get_repo(repo_type, repo_id), revision)
            return {path: stored.data for path, stored in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> set[str]:
        """Paths stored as LFS files at ``revision``."""
        with self._lock:
            commit = self._resolve_revision(self._get_repo(repo_type, repo_id), revision)
            return {path for path, stored in commit.files.items() if stored.is_lfs}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[HubCommit]:
        """The history of ``main``, oldest first (the first one is the repo creation)."""
        with self._lock:
            return list(self._get_repo(repo_type, repo_id).commits)

    def patch_client(self, monkeypatch: Any, token_in_env: bool = False) -> None:
        """Point the in-process ``huggingface_hub`` (and ``transformers``) at this server.

        Sets ``HF_ENDPOINT``, unsets ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, and patches the
        module-level constants the client read at import time (``ENDPOINT``,
        ``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` when LFS is on).
        ``monkeypatch`` undoes all of it after the test. With ``token_in_env`` the server's token is
        exported as ``HF_TOKEN``; otherwise pass ``token=hub.token`` explicitly.
        """
        from huggingface_hub import constants

        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        if self.lfs_patterns:
            monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        if token_in_env:
            monkeypatch.setenv("HF_TOKEN", self.token)
        # transformers caches one HfApi (bound to the endpoint of its first use): drop it.
        try:
            import transformers.utils.hub as transformers_hub
        except Exception:  # transformers missing or broken: nothing to reset
            transformers_hub = None
        if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
            monkeypatch.setattr(transformers_hub, "_hf_api", None)

    def subprocess_env(
        self, hf_home: str | os.PathLike[str], base: Mapping[str, str] | None = None, token_in_env: bool = True
    ) -> dict[str, str]:
        """Environment for a child process that talks to this server with its own empty cache."""
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HF_MODULES_CACHE"):
            env.pop(key, None)
        env["HF_ENDPOINT"] = self.endpoint
        env["HF_HOME"] = str(hf_home)
        env["HF_HUB_DISABLE_TELEMETRY"] = "1"
        if self.lfs_patterns:
            env["HF_HUB_DISABLE_XET"] = "1"
        if token_in_env:
            env["HF_TOKEN"] = self.token
        else:
            env.pop("HF_TOKEN", None)
        return env

    # ----------------------------------------------------------------- state (called with the lock held)

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve_revision(self, repo: _Repo, revision: str) -> HubCommit:
        if revision == "main":
            return repo.head
        if _SHA_PREFIX.match(revision):
            for commit in reversed(repo.commits):
                if commit.oid.startswith(revision):
                    return commit
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(
        self, repo: _Repo, title: str, message: str, files: dict[str, StoredFile], author: str
    ) -> HubCommit:
        parent = repo.commits[-1].oid if repo.commits else None
        seed = json.dumps(
            [parent, title, message, sorted((p, f.git_oid) for p, f in files.items()), next(self._commit_counter)]
        )
        commit = HubCommit(
            oid=hashlib.sha1(seed.encode()).hexdigest(),
            title=title,
            message=message,
            parent=parent,
            files=files,
            author=author,
        )
        repo.commits.append(commit)
        return commit

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIX_BY_REPO_TYPE[repo.repo_type]}{repo.repo_id}"

    def _is_lfs_path(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern) for pattern in self.lfs_patterns)


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request to the matching Hub endpoint. ``hub`` is bound by ``HubServer.start``."""

    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "hf-dimml-test-hub/1.0"

    # ----------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; the request log is `hub.requests`

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

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.hub.requests.append((method, split.path))
        body = self._read_body()
        try:
            with self.hub._lock:
                self._route(method, split.path, body)
        except _HubError as error:
            headers = dict(error.headers)
            headers["X-Error-Message"] = error.message.splitlines()[0]
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            self._send_json(error.status, error.body, headers)
        except Exception as error:  # a bug in the server: answer 500 rather than hang the client
            self._send_json(500, {"error": f"test hub server error: {error!r}"})

    def _read_body(self) -> bytes:
        # The LFS PUT streams a file object, which httpx may send chunked.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None, head_only: bool = False
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self._send(status, json.dumps(payload).encode(), all_headers, head_only=self.command == "HEAD")

    def _json_body(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except json.JSONDecodeError as error:
            raise _HubError(400, f"Invalid JSON body: {error}") from error

    # ----------------------------------------------------------------- auth

    def _user(self, required: bool) -> str | None:
        """The token owner; with ``required``, a missing or unknown token is a 401 like the Hub's."""
        authorization = self.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        if token is None:
            if required:
                raise _HubError(401, "Invalid username or password.")
            return None
        user = self.hub._tokens.get(token)
        if user is None:
            if required:
                raise _HubError(401, "Invalid credentials in Authorization header")
            return None
        return user

    def _readable_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.hub._get_repo(repo_type, repo_id)
        if repo.private and self._user(required=False) is None:
            raise _HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str) -> tuple[_Repo, str]:
        user = self._user(required=True)
        assert user is not None
        repo = self.hub._get_repo(repo_type, repo_id)
        if self.hub.restrict_namespaces and repo_id.split("/")[0] != user:
            raise _HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo, user

    # ----------------------------------------------------------------- routing

    def _route(self, method: str, path: str, body: bytes) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["api"]:
            return self._route_api(method, parts[1:], body)
        if parts[:1] == ["__lfs_upload__"] and method == "PUT" and len(parts) == 4:
            return self._lfs_upload(parts[1], unquote(parts[2]), parts[3], body)
        if parts[:1] == ["__lfs_verify__"] and method == "POST" and len(parts) == 4:
            return self._lfs_verify(parts[1], unquote(parts[2]), parts[3])
        repo_type = _REPO_TYPE_BY_PREFIX.get(parts[0], "model") if parts else "model"
        rest = parts[1:] if parts and parts[0] in ("datasets", "spaces") else parts
        # /{ns}/{name}.git/info/lfs/objects/batch
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}", body)
        # /{ns}/{name}/resolve/{rev}/{path...}
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise _HubError(404, f"Not found: {method} {path}")

    def _route_api(self, method: str, parts: list[str], body: bytes) -> None:
        if parts == ["repos", "create"] and method == "POST":
            return self._create_repo(self._json_body(body) or {})
        if parts == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo(self._json_body(body) or {})
        if parts == ["whoami-v2"] and method == "GET":
            user = self._user(required=True)
            return self._send_json(
                200,
                {
                    "type": "user",
                    "name": user,
                    "fullname": user,
                    "orgs": [],
                    "auth": {"accessToken": {"displayName": "test", "role": "write"}},
                },
            )
        if parts == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(self._json_body(body) or {})
        if len(parts) >= 3 and parts[0] in _REPO_TYPE_BY_PREFIX:
            repo_type, repo_id, action = _REPO_TYPE_BY_PREFIX[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
            if not action and method == "GET":
                return self._repo_info(repo_type, repo_id, "main")
            if len(action) == 2 and action[0] == "revision" and method == "GET":
                return self._repo_info(repo_type, repo_id, action[1])
            if len(action) >= 2 and action[0] == "tree" and method == "GET":
                return self._tree(repo_type, repo_id, action[1], "/".join(action[2:]))
            if len(action) == 2 and action[0] == "commits" and method == "GET":
                return self._list_commits(repo_type, repo_id, action[1])
            if len(action) == 2 and action[0] == "preupload" and method == "POST":
                return self._preupload(repo_type, repo_id, action[1], self._json_body(body) or {})
            if len(action) == 2 and action[0] == "commit" and method == "POST":
                return self._commit(repo_type, repo_id, action[1], body)
            if len(action) >= 1 and action[0] in ("xet-write-token", "xet-read-token"):
                raise _HubError(501, "This test Hub does not implement Xet storage: set HF_HUB_DISABLE_XET=1")
        raise _HubError(404, f"Not found: {method} /api/{'/'.join(parts)}")

    # ----------------------------------------------------------------- repos

    def _create_repo(self, payload: dict[str, Any]) -> None:
        user = self._user(required=True)
        assert user is not None
        name, organization = payload.get("name"), payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[\w.\-]{1,96}", name)
            or repo_type not in _URL_PREFIX_BY_REPO_TYPE
        ):
            raise _HubError(400, f"Invalid repo name or type: {name!r} ({repo_type!r})")
        if self.hub.restrict_namespaces and organization != user:
            raise _HubError(
                403, f'You don\'t have the rights to create a {repo_type} under the namespace "{organization}"'
            )
        repo_id = f"{organization}/{name}"
        existing = self.hub._repos.get((repo_type, repo_id))
        if existing is not None:
            raise _HubError(
                409,
                f"You already created this {repo_type} repo",
                body={"error": f"You already created this {repo_type} repo", "url": self.hub._repo_url(existing)},
            )
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = _Repo(repo_id=repo_id, repo_type=repo_type, private=private, owner=user)
        self.hub._repos[(repo_type, repo_id)] = repo
        self.hub._new_commit(repo, "initial commit", "", {".gitattributes": StoredFile(_INITIAL_GITATTRIBUTES)}, user)
        self._send_json(200, {"url": self.hub._repo_url(repo), "name": repo_id, "id": secrets.token_hex(12)})

    def _delete_repo(self, payload: dict[str, Any]) -> None:
        user = self._user(required=True)
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        repo_type = payload.get("type") or "model"
        self._writable_repo(repo_type, repo_id)
        del self.hub._repos[(repo_type, repo_id)]
        self._send_json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        commit = self.hub._resolve_revision(repo, revision)
        with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=len(stored.data), blobId=stored.git_oid)
                if stored.is_lfs:
                    sibling["lfs"] = {
                        "size": len(stored.data),
                        "sha256": stored.sha256,
                        "pointerSize": len(stored.lfs_pointer),
                    }
            siblings.append(sibling)
        card_data = _card_metadata(commit.files.get("README.md"))
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card_data.get("tags") or []) if isinstance(card_data.get("tags"), list) else [],
            "siblings": siblings,
            "usedStorage": sum(len(f.data) for f in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card_data.get(key), str):
                    info[key] = card_data[key]
            if card_data.get("model-index") is not None:
                info["model-index"] = card_data["model-index"]
            config = _json_file(commit.files.get("config.json"))
            if isinstance(config, dict):
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
                if "auto_map" in config and "custom_code" not in info["tags"]:
                    info["tags"].append("custom_code")
        if card_data:
            info["cardData"] = {k: v for k, v in card_data.items() if k != "model-index"}
        self._send_json(200, info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        commit = self.hub._resolve_revision(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, stored in commit.files.items():
            if not path.startswith(prefix):
                continue
            relative_parts = path[len(prefix) :].split("/")
            # every folder between `folder` and the file (only the first level unless recursive)
            for depth in range(1, len(relative_parts)):
                if depth > 1 and not recursive:
                    break
                folder_path = prefix + "/".join(relative_parts[:depth])
                entries.setdefault(folder_path, {"type": "directory", "path": folder_path, "size": 0, "oid": ""})
            if len(relative_parts) == 1 or recursive:
                entry: dict[str, Any] = {"type": "file", "path": path, "size": len(stored.data), "oid": stored.git_oid}
                if stored.is_lfs:
                    entry["lfs"] = {
                        "oid": stored.sha256,
                        "size": len(stored.data),
                        "pointerSize": len(stored.lfs_pointer),
                    }
                entries[path] = entry
        if prefix and not entries:
            raise _HubError(
                404, f"{folder} does not exist on {revision}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        for entry in entries.values():
            if entry["type"] == "directory":  # a folder's oid changes whenever its content does
                content = sorted((p, f.git_oid) for p, f in commit.files.items() if p.startswith(entry["path"] + "/"))
                entry["oid"] = hashlib.sha1(json.dumps(content).encode()).hexdigest()
        self._send_json(200, sorted(entries.values(), key=lambda e: e["path"]))

    def _list_commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        head = self.hub._resolve_revision(repo, revision)
        history = repo.commits[: repo.commits.index(head) + 1]
        self._send_json(
            200,
            [
                {"id": c.oid, "title": c.title, "message": c.message, "date": c.date, "authors": [{"user": c.author}]}
                for c in reversed(history)
            ],
        )

    # ----------------------------------------------------------------- cards

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        content = payload.get("content")
        if not isinstance(content, str):
            raise _HubError(
                400, '"content" (string) is required', body={"errors": [{"message": '"content" is required'}]}
            )
        errors, warnings = validate_card_metadata(content, payload.get("repoType") or "model")
        body = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
        if errors:
            raise _HubError(400, "Invalid metadata in README.md: " + "; ".join(errors), body=body)
        self._send_json(200, body)

    # ----------------------------------------------------------------- uploads

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict[str, Any]) -> None:
        repo, _ = self._writable_repo(repo_type, repo_id)
        commit = self.hub._resolve_revision(repo, revision)
        files_out = []
        for item in payload.get("files") or []:
            path = item["path"]
            is_lfs = self.hub._is_lfs_path(path)
            described: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if is_lfs else "regular",
                "shouldIgnore": False,
            }
            existing = commit.files.get(path)
            if existing is not None:  # lets the client skip unchanged files (same oid flavour as its own)
                described["oid"] = existing.sha256 if is_lfs else _git_blob_oid(existing.data)
            files_out.append(described)
        self._send_json(200, {"files": files_out, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes) -> None:
        repo, _ = self._writable_repo(repo_type, repo_id)
        payload = self._json_body(body) or {}
        if payload.get("operation") != "upload":
            raise _HubError(400, "Only the LFS 'upload' operation is supported by this test Hub")
        objects = []
        quoted_repo = repo_id.replace("/", "%2F")
        for obj in payload.get("objects") or []:
            oid, size = obj["oid"], obj["size"]
            described: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in repo.lfs_objects:
                described["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/__lfs_upload__/{repo_type}/{quoted_repo}/{oid}"},
                    "verify": {"href": f"{self.hub.endpoint}/__lfs_verify__/{repo_type}/{quoted_repo}/{oid}"},
                }
            objects.append(described)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_upload(self, repo_type: str, repo_id: str, oid: str, body: bytes) -> None:
        # Plays the pre-signed storage URL: no Authorization header, like S3.
        repo = self.hub._get_repo(repo_type, repo_id)
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, f"Uploaded content does not match sha256 {oid}")
        repo.lfs_objects[oid] = body
        self._send(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, oid: str) -> None:
        repo, _ = self._writable_repo(repo_type, repo_id)
        if oid not in repo.lfs_objects:
            raise _HubError(404, f"LFS object {oid} was not uploaded")
        self._send_json(200, {"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo, user = self._writable_repo(repo_type, repo_id)
        if self.query.get("create_pr"):
            raise _HubError(400, "Pull requests are not supported by this test Hub")
        if revision != "main":
            raise _HubError(404, f"Invalid rev id: {revision} (this test Hub commits to main only)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "The first NDJSON line of a commit must be the header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not repo.head.oid.startswith(parent):
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[path] = StoredFile(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value["oid"]
                content = repo.lfs_objects.get(oid)
                if content is None:  # a copy of an LFS file already in the repo
                    content = next((f.data for f in files.values() if f.is_lfs and f.sha256 == oid), None)
                if content is None:
                    raise _HubError(400, f"LFS file {path} ({oid}) has not been uploaded")
                files[path] = StoredFile(content, is_lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                for existing in [p for p in files if p.startswith(prefix)]:
                    del files[existing]
            else:
                raise _HubError(400, f"Unknown commit operation {key!r}")
        readme = files.get("README.md")
        if readme is not None and readme is not repo.head.files.get("README.md"):
            errors, _ = validate_card_metadata(readme.data.decode("utf-8", "replace"), repo_type)
            if errors:
                raise _HubError(400, "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors))
        commit = self.hub._new_commit(
            repo, header.get("summary") or "update", header.get("description") or "", files, user
        )
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
            },
        )

    # ----------------------------------------------------------------- downloads

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        commit = self.hub._resolve_revision(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.git_oid}"',
            "Accept-Ranges": "bytes",
        }
        if stored.is_lfs:  # the client keys its cache on the LFS sha256, announced by these headers
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(len(stored.data))
        data, status = stored.data, 200
        range_match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if range_match and self.command == "GET":
            start = int(range_match.group(1))
            end = int(range_match.group(2)) if range_match.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, head_only=self.command == "HEAD")


def _card_metadata(readme: StoredFile | None) -> dict[str, Any]:
    if readme is None:
        return {}
    match = _YAML_BLOCK.search(readme.data.decode("utf-8", "replace"))
    try:
        metadata = yaml.safe_load(match.group(2)) if match else None
    except yaml.YAMLError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _json_file(stored: StoredFile | None) -> Any:
    try:
        return json.loads(stored.data) if stored is not None else None
    except ValueError:
        return None


try:  # a ready-made `hub` fixture for test modules and conftests (import `hub_fixture`)
    import pytest

    @pytest.fixture(name="hub")
    def hub_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
        """``hub``: a running ``HubServer`` with the in-process client patched to use it (undone afterwards)."""
        with HubServer() as server:
            server.patch_client(monkeypatch)
            yield server

except ImportError:  # pytest is only needed for the fixture
    pass


if __name__ == "__main__":  # manual use: python tests/hub_server.py, then HF_ENDPOINT=... in another shell
    with HubServer() as server:
        print(f"HF_ENDPOINT={server.endpoint} HF_TOKEN={server.token}  (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
