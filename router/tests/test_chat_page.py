"""The chat page: served by the router at ``/-/chat``, and by ``chat/server.py`` on its own,
which relays the API to an endpoint with streamed answers passed straight through."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import falcon.testing
import openai
import pytest
import requests
from router_servers import CHAT_SERVER, dead_url, start_chat_server, stop
from skyk_router.app import create_app
from skyk_router.chat.server import PAGE_FILES, PAGE_PATH
from skyk_router.settings import RouterSettings

ROUTER_DIR = Path(__file__).resolve().parents[1]
CHAT = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(RouterSettings()))


def test_router_serves_the_page_and_its_files(client):
    # No replica is ready, yet the page loads: /-/ paths are the router's own.
    for path in (PAGE_PATH, PAGE_PATH + "/", PAGE_PATH + "/index.html"):
        page = client.simulate_get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>skyk chat</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
        asset = client.simulate_get(f"{PAGE_PATH}/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert f"{PAGE_PATH}/{name}" in client.simulate_get(PAGE_PATH).text  # linked by the page
    for missing in ("server.py", "page.py", "__init__.py", "..%2Fapp.py", "nope.js"):
        assert client.simulate_get(f"{PAGE_PATH}/{missing}").status_code == 404, missing


def test_page_is_open_when_api_keys_are_required(router, fake_openai):
    key = "s3cret"
    router.set_replicas([fake_openai], api_keys_sha256=[hashlib.sha256(key.encode()).hexdigest()])
    assert requests.get(f"{router.url}{PAGE_PATH}", timeout=5).status_code == 200
    assert requests.get(f"{router.url}/v1/models", timeout=5).status_code == 401
    models = requests.get(f"{router.url}/v1/models", timeout=5,
                          headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200


@pytest.fixture
def chat_server(fake_openai):
    """``chat/server.py`` relaying to the fake OpenAI server; yields its base URL."""
    server = start_chat_server(fake_openai)
    try:
        yield server.url
    finally:
        stop(server.proc)


def test_own_server_serves_the_same_page(chat_server, client):
    root = requests.get(chat_server, timeout=5, allow_redirects=False)
    assert root.status_code == 302 and root.headers["Location"] == PAGE_PATH
    for name in ("", "chat.js", "chat.css"):
        own = requests.get(f"{chat_server}{PAGE_PATH}/{name}", timeout=5)
        from_router = client.simulate_get(f"{PAGE_PATH}/{name}")
        assert own.status_code == 200
        assert own.content == from_router.content
        assert own.headers["Content-Type"] == from_router.headers["content-type"]
        assert own.headers["Content-Security-Policy"] == from_router.headers["content-security-policy"]
    assert requests.get(f"{chat_server}{PAGE_PATH}/server.py", timeout=5).status_code == 404
    assert requests.post(f"{chat_server}{PAGE_PATH}", timeout=5).status_code == 405


def test_own_server_relays_streams_as_they_arrive(chat_server):
    client = openai.OpenAI(base_url=f"{chat_server}/v1", api_key="unused", max_retries=0)
    assert [model.id for model in client.models.list()] == ["fake-model"]
    whole = client.chat.completions.create(model="fake-model", messages=CHAT)
    assert whole.choices[0].message.content == "Hello from the fake replica."
    arrivals: list[float] = []
    pieces: list[str] = []
    for chunk in client.chat.completions.create(model="fake-model", messages=CHAT, stream=True):
        arrivals.append(time.monotonic())
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello from the fake replica."
    # The fake sends its 6 events 50 ms apart; a relay that buffered the answer
    # would hand them all over at once. (A lower bound: load only widens it.)
    assert arrivals[-1] - arrivals[0] >= 0.15


def test_own_server_passes_the_api_key_and_the_routers_errors(router, fake_openai):
    key = "s3cret"
    router.set_replicas([fake_openai], api_keys_sha256=[hashlib.sha256(key.encode()).hexdigest()])
    server = start_chat_server(router.url.removeprefix("http://"))  # HOST:PORT, as gui.yaml gets
    try:
        refused = requests.get(f"{server.url}/v1/models", timeout=5)
        assert refused.status_code == 401
        assert "Authorization: Bearer" in refused.json()["error"]["hint"]
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        assert client.chat.completions.create(model="fake-model", messages=CHAT).choices
        router.set_replicas([])
        unavailable = requests.get(f"{server.url}/v1/models", timeout=5)
        assert unavailable.status_code == 503
        assert "no replica is ready" in unavailable.json()["error"]["hint"]
    finally:
        stop(server.proc)


def test_own_server_answers_502_when_the_endpoint_is_down():
    server = start_chat_server(dead_url())
    try:
        answer = requests.post(f"{server.url}/v1/chat/completions", json={"messages": CHAT},
                               timeout=10)
        assert answer.status_code == 502
        assert "did not answer" in answer.json()["error"]
        assert "ENDPOINT" in answer.json()["hint"]
    finally:
        stop(server.proc)


def test_own_server_needs_an_endpoint():
    result = subprocess.run([sys.executable, str(CHAT_SERVER)], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "ENDPOINT"},
                            timeout=30)
    assert result.returncode == 2
    assert "--upstream" in result.stderr


@pytest.mark.slow
def test_wheel_ships_the_page(tmp_path):
    # Built from a copy, so the build leaves nothing in the checkout.
    source = tmp_path / "router"
    shutil.copytree(ROUTER_DIR, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("skyk_router-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"skyk_router/chat/{filename}" for filename, _ in PAGE_FILES.values()}
    assert wanted | {"skyk_router/chat/server.py", "skyk_router/chat/page.py"} <= names
