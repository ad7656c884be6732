"""The official OpenAI client through the router, and the router over TLS."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import requests
from router_servers import (
    HERE,
    free_loopback_port,
    start_router,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_openai():
    """``fake_openai.py`` on a free port; yields its base URL."""
    port = free_loopback_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_openai.py"), "--port", str(port),
                             "--event-interval", "0.05"])
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(f"{url}/v1/models", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(up, message="fake OpenAI server up")
        yield url
    finally:
        stop(proc)


def test_openai_client_through_the_router(router, fake_openai):
    router.set_replicas([fake_openai])
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "Hi"}])
    assert chat.choices[0].message.content == "Hello from the fake replica."
    completion = client.completions.create(model="fake-model", prompt="Hi")
    assert completion.choices[0].text == "Hello from the fake replica."
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "Hi"}], stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert len(pieces) > 1
    assert "".join(piece or "" for piece in pieces) == "Hello from the fake replica."


def test_router_serves_tls(tmp_path, fake_openai):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    router = start_router(tmp_path, workers=1, tls=(key, cert))
    try:
        router.set_replicas([fake_openai])
        got = requests.get(f"{router.url}/v1/models", timeout=5, verify=str(cert))
        assert got.status_code == 200
        assert got.json()["data"][0]["id"] == "fake-model"
    finally:
        stop(router.proc)
