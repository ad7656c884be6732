"""The official OpenAI client through the router, and the router over TLS."""

from __future__ import annotations

import subprocess

import openai
import pytest
import requests
from router_servers import start_router, stop

pytestmark = pytest.mark.slow


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
