"""A fake Hugging Face Hub on 127.0.0.1 for tests: answers the file API that ``hf_hub_download`` uses.

``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` return the headers ``huggingface_hub``'s
``get_hf_file_metadata`` reads (``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` = the sha256 as for an
LFS file, ``X-Linked-Size``, ``Content-Length``), and the body on ``GET`` (``Range: bytes=N-`` gives 206).

Fault modes, per file or for every file (:meth:`FakeHub.fault`):

* ``"404"`` / ``"500"``: that status on HEAD and GET;
* ``"timeout"``: HEAD and GET answer only after ``delay`` seconds (the client should give up first);
* ``"truncated"``: GET sends half the body with a matching ``Content-Length`` (HEAD announced the full size);
* ``"dropped"``: GET announces the full length, sends half and closes the connection;
* ``"tampered"``: GET sends the full length with one byte changed.

Run by hand to serve the registered models from ``weights/``::

    python tests/hubserver.py --port 8999 &
    HF_ENDPOINT=http://127.0.0.1:8999 defocus models download
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

FAULTS = ("404", "500", "timeout", "truncated", "dropped", "tampered")


class FakeHub:
    """A threaded loopback server holding ``{(repo_id, revision, filename): bytes}``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. :attr:`requests` logs
    ``(method, path, status)`` of every request answered.
    """

    def __init__(self, delay: float = 3.0) -> None:
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.faults: dict[str, str] = {}
        self.delay = delay
        self.requests: list[tuple[str, str, int]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    # -- content ----------------------------------------------------------------------------
    def add(self, repo_id: str, revision: str, filename: str, data: bytes) -> None:
        """Serve ``data`` as ``filename`` of ``repo_id`` at commit ``revision``."""
        self.files[(repo_id, revision, filename)] = bytes(data)

    def add_spec(self, spec: object, data: bytes) -> None:
        """Serve ``data`` for a registry :class:`ModelSpec` (its repo_id, revision and filename)."""
        self.add(spec.repo_id, spec.revision, spec.filename, data)  # type: ignore[attr-defined]

    def fault(self, mode: str | None, filename: str | None = None) -> None:
        """Set (or clear with ``None``) a fault mode for ``filename`` or, with no filename, every file."""
        key = filename or "*"
        if mode is None:
            self.faults.pop(key, None)
        else:
            if mode not in FAULTS:
                raise ValueError(f"unknown fault {mode!r}; expected one of {FAULTS}")
            self.faults[key] = mode

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the value for ``HF_ENDPOINT``)."""
        if self._server is None:
            raise RuntimeError("server not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (``port`` 0 = an ephemeral port) in a daemon thread; return :attr:`url`."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop answering and close the socket (sleeping fault handlers are woken up)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(head=False)

    def _lookup(self) -> tuple[tuple[str, str, str] | None, bytes | None]:
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if "resolve" not in parts:
            return None, None
        i = parts.index("resolve")
        if i == 0 or len(parts) < i + 3:
            return None, None
        key = ("/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :]))
        return key, self.hub.files.get(key)

    def _status(self, code: int, head: bool) -> None:
        body = b"" if head else f"HTTP {code}".encode()
        self.send_response(code)
        if code == 404:
            self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _answer(self, head: bool) -> None:
        hub = self.hub
        method = "HEAD" if head else "GET"
        key, data = self._lookup()
        mode = hub.faults.get(key[2] if key else "", hub.faults.get("*")) if key else None
        if mode == "timeout":
            hub._stopping.wait(hub.delay)
        if key is None or data is None or mode == "404":
            hub._log(method, self.path, 404)
            return self._status(404, head)
        if mode == "500":
            hub._log(method, self.path, 500)
            return self._status(500, head)
        sha = hashlib.sha256(data).hexdigest()
        full = len(data)
        status, start = 200, 0
        rng = self.headers.get("Range")
        if not head and rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = min(int(rng[6:].split("-")[0]), full)
            status = 206
        body = data[start:]
        length = len(body)
        if not head:
            if mode == "tampered":
                mid = len(body) // 2
                body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :] if body else body
            elif mode == "truncated":
                body = body[: len(body) // 2]
                length = len(body)
            elif mode == "dropped":
                body = body[: len(body) // 2]  # length stays the full one: the peer closes early
        hub._log(method, self.path, status)
        self.send_response(status)
        self.send_header("X-Repo-Commit", key[1])
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(full))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{full - 1}/{full}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            if mode == "dropped":
                self.close_connection = True


@contextmanager
def serving(files: dict[tuple[str, str, str], bytes] | None = None) -> Iterator[FakeHub]:
    """Context manager: a started :class:`FakeHub` serving ``files``."""
    hub = FakeHub()
    for (repo, rev, name), data in (files or {}).items():
        hub.add(repo, rev, name, data)
    with hub:
        yield hub


# ------------------------------------------------------------------------------------------------
# Test helpers: a tiny registry served by a FakeHub, with the environment that points the CLI at it.


def tiny_weight_bytes(arch: str, seed: int = 0, n: int = 4096) -> bytes:
    """A small safetensors file (numpy, no torch) with ``{"arch": arch}`` metadata."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    return save({"w": rng.standard_normal(n).astype(np.float32)}, metadata={"arch": arch, "producer": "tests"})


def registry_entry(name: str, data: bytes, *, arch: str, task: str, repo_id: str | None = None) -> dict:
    """A registry JSON entry for ``data`` (revision derived from the content, as tools/ does)."""
    sha = hashlib.sha256(data).hexdigest()
    repo = repo_id or f"test-org/{name}"
    rev = hashlib.sha1(f"{repo}\n{name}\n{sha}".encode()).hexdigest()
    return {"name": name, "task": task, "arch": arch, "repo_id": repo, "filename": f"{name}.safetensors",
            "revision": rev, "sha256": sha, "size": len(data), "license": "MIT", "summary": f"test model {name}",
            "card": "", "config": {}}


class HubEnv:
    """A started :class:`FakeHub` serving a registry file of tiny models, plus the environment to use them.

    Attributes:
        hub: the server. root: the temporary folder. registry_path: the registry JSON.
        env: variables to set (``HF_HOME``, ``HF_ENDPOINT``, ``DEFOCUS_REGISTRY``, ``DEFOCUS_WEIGHTS_DIR``
            pointing at an empty folder, short timeouts, no proxies, no progress bars).
        data: ``{name: file bytes}``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = FakeHub(delay=3.0)
        self.registry_path = root / "models.json"
        self.doc: dict = {"defaults": {}, "models": []}
        self.data: dict[str, bytes] = {}
        (root / "own-weights").mkdir(parents=True, exist_ok=True)
        url = self.hub.start()
        self.env = {
            "HF_HOME": str(root / "hf"),
            "HF_ENDPOINT": url,
            "DEFOCUS_REGISTRY": str(self.registry_path),
            "DEFOCUS_WEIGHTS_DIR": str(root / "own-weights"),
            "HF_HUB_ETAG_TIMEOUT": "1",
            "HF_HUB_DOWNLOAD_TIMEOUT": "2",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    @property
    def cache(self) -> Path:
        """The HF hub cache folder of :attr:`env`."""
        return Path(self.env["HF_HOME"]) / "hub"

    def add_model(self, name: str, data: bytes, *, arch: str = "ifan", task: str = "deblur",
                  default: bool = False, serve: bool = True) -> dict:
        """Register ``data`` as model ``name`` (rewrites the registry file) and serve it."""
        entry = registry_entry(name, data, arch=arch, task=task)
        self.doc["models"].append(entry)
        if default:
            self.doc["defaults"][task] = name
        self.registry_path.write_text(json.dumps(self.doc, indent=2))
        self.data[name] = data
        if serve:
            self.hub.add(entry["repo_id"], entry["revision"], entry["filename"], data)
        return entry

    def blobs(self) -> list[Path]:
        """Every file under the cache's ``blobs/`` folders (complete or not)."""
        return sorted(p for p in self.cache.glob("models--*/blobs/*") if p.is_file())

    def stop(self) -> None:
        self.hub.stop()


def main() -> None:
    """Serve the registered models' files from the project's weights/ folder until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8999)
    ap.add_argument("--weights", type=Path, default=Path(__file__).resolve().parent.parent / "weights")
    args = ap.parse_args()
    from defocus_cli import registry

    hub = FakeHub()
    for spec in registry.MODELS:
        f = args.weights / spec.filename
        if f.is_file():
            hub.add_spec(spec, f.read_bytes())
    url = hub.start(args.port)
    print(f"serving {len(hub.files)} file(s) at {url}  (HF_ENDPOINT={url})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
