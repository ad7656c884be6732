"""Azurite, Microsoft's Azure Storage emulator, started from npm for the tests.

Only its Blob service runs (``azurite-blob``), in memory, on a free port of
``host`` (loopback by default; a bridge address lets node twins reach it).
:meth:`Azurite.env` gives what a user would set to point the Azure store at
another Blob endpoint: a connection string naming Azurite's well-known
development account, its published key and Azurite's address.

``dev/install`` installs Azurite with npm into ``tests/.node`` (git-ignored);
``AZURITE_BLOB`` names another ``azurite-blob`` program.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

#: Azurite's built-in development account and its published key (not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: where dev/install puts the npm package
NODE_DIR = Path(__file__).resolve().parents[1] / ".node"
#: seconds Azurite may take to start on a busy machine
START_TIMEOUT = 90.0
#: Azurite's line once it listens; with port 0 it names the port it got
_LISTENING = re.compile(r"listens on (http://\S+?):(\d+)")


def program() -> str | None:
    """Return the ``azurite-blob`` program to run, or ``None`` when it is not installed."""
    named = os.environ.get("AZURITE_BLOB")
    if named:
        return named
    local = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


class Azurite:
    """Azurite's Blob service on a free port of ``host``, as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def endpoint(self) -> str:
        """The Blob service URL of the development account (path-style, as Azurite serves it)."""
        return f"http://{self.host}:{self.port}/{ACCOUNT}"

    def env(self) -> dict[str, str]:
        """The variables that point skyk's Azure store, and the Azure SDKs, at this Azurite."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def connection_string(self) -> str:
        """A storage connection string for the development account at this Azurite."""
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.endpoint};")

    def start(self) -> Azurite:
        """Start Azurite and wait until it answers; raise ``RuntimeError`` if it does not."""
        found = program()
        if found is None:
            raise RuntimeError("azurite-blob is not installed (dev/install installs it with npm)")
        # Azurite writes nothing to its workspace when in memory, but it is started in an
        # empty folder of its own so nothing of it can land in the checkout.
        self._workdir = tempfile.TemporaryDirectory(prefix="skyk-azurite-")
        log_path = Path(self._workdir.name) / "azurite.log"
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                [found, "--blobHost", self.host, "--blobPort", "0", "--inMemoryPersistence",
                 "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                cwd=self._workdir.name, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.port = self._wait_listening(log_path)
            self._wait_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, log_path: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            match = _LISTENING.search(text)
            if match:
                return int(match.group(2))
            if self._process.poll() is not None:
                raise RuntimeError(f"azurite-blob exited ({self._process.returncode}): {text.strip()}")
            time.sleep(0.1)
        raise RuntimeError(f"azurite-blob did not listen within {START_TIMEOUT:.0f} s")

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}?comp=list", timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # an unsigned request is refused: Azurite answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Azurite at {self.endpoint} did not answer") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop Azurite (politely, then by force) and remove its folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
