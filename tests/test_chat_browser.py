"""The chat page in headless Chromium: through a local service's router (``/-/chat``), on a
cluster of its own (examples/gui.yaml), and showing the router's errors."""

from __future__ import annotations

import hashlib

import openai
import pytest
from chromium import browser, expect, new_page  # noqa: F401 - browser is a pytest fixture
from lifecycle_helpers import wait_for
from router_servers import start_fake_openai, start_router, stop
from serve_helpers import CPU_CHAT_TASK, REPO, get, needs_router, running_service

pytestmark = [
    pytest.mark.slow,
    needs_router,
]

GUI_TASK = REPO / "examples" / "gui.yaml"
REPLIES = "#messages .message.assistant"
#: Installed once per page: records (time, length) of the last reply at each
#: change the page makes, so growth is seen however slowly the test runs.
WATCH_REPLIES = """() => {
  window.replyGrowth = [];
  new MutationObserver(() => {
    const replies = document.querySelectorAll("#messages .message.assistant .content");
    const last = replies[replies.length - 1];
    if (last) window.replyGrowth.push([performance.now(), last.textContent.length]);
  }).observe(document.getElementById("messages"),
             {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def chat_service(skyk, isolated_home):
    """The CPU chat recipe's endpoint, words 0.1 s apart so that replies visibly stream."""
    with running_service(skyk, isolated_home, "chat", CPU_CHAT_TASK, "--env", "TOKEN_DELAY=0.1",
                         replicas=2) as endpoint:
        yield endpoint


def open_chat(browser, url: str):  # noqa: F811 - browser is the fixture's value
    """Open the chat page at ``url``, watching its replies, once it has listed the models."""
    page = new_page(browser)
    page.goto(url)
    page.locator("#model option").first.wait_for(state="attached")
    page.evaluate(WATCH_REPLIES)
    return page


def send(page, text: str, streamed: bool = True) -> str:
    """Send ``text`` and return the completed reply.

    With ``streamed``, also check that the reply grew in the page word by
    word over at least half a second (the model sends a word every 0.1 s; a
    buffered answer would appear at once).
    """
    done = page.locator(f"{REPLIES}[data-state=done]")
    before = done.count()
    page.evaluate("() => { window.replyGrowth = []; }")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    done.nth(before).wait_for()
    reply = done.nth(before).locator(".content").inner_text()
    if streamed:
        growth = page.evaluate("() => window.replyGrowth")
        lengths = [length for _, length in growth]
        assert lengths == sorted(lengths), lengths  # it only ever grows
        steps = sorted(set(lengths) - {0})
        assert len(steps) >= 10, steps
        first = min(when for when, length in growth if length)
        last = min(when for when, length in growth if length == lengths[-1])
        assert last - first >= 500, growth  # milliseconds
        assert lengths[-1] == len(reply)
    return reply


def screenshot(page, tmp_path, name: str) -> None:
    """Save the page as ``tmp_path/name`` and print where."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_router_chat_page_streams_replies_with_the_chosen_settings(browser, chat_service,  # noqa: F811
                                                                   tmp_path):
    page = open_chat(browser, f"http://{chat_service}/-/chat")
    page.select_option("#model", "tiny-chat")
    page.fill("#system-prompt", "Answer in one line")
    page.locator("#temperature").fill("0")
    expect(page.locator("#temperature-value")).to_have_text("0.00")

    first = send(page, "Hello from Chromium")
    assert first.startswith('You said "Hello from Chromium" (system prompt "Answer in one line")'
                            " at temperature 0, top_p 1. ")
    expect(page.locator(f"{REPLIES} .meta").first).to_contain_text("tiny-chat · ")

    page.locator("#temperature").fill("1.3")
    page.locator("#top-p").fill("0.5")
    expect(page.locator("#temperature-value")).to_have_text("1.30")
    second = send(page, "And once more, warmer")
    assert 'You said "And once more, warmer"' in second
    assert " at temperature 1.3, top_p 0.5. " in second
    expect(page.locator("#messages .message.user")).to_have_count(2)  # one conversation
    expect(page.locator("#error")).to_be_hidden()
    screenshot(page, tmp_path, "chat-router.png")

    page.click("#new-chat")
    expect(page.locator(REPLIES)).to_have_count(0)
    expect(page.locator("#chat-list button")).to_have_count(2)
    page.locator("#chat-list button").nth(1).click()  # back to the first conversation
    expect(page.locator(REPLIES)).to_have_count(2)


def test_gui_cluster_serves_the_page_and_relays_streams(skyk, browser, chat_service,  # noqa: F811
                                                        tmp_path):
    # The node gets its own network namespace where the machine allows it, and still
    # reaches the endpoint as printed (published on the local cloud's bridge address).
    launch = skyk("launch", "-c", "chat-gui", str(GUI_TASK), "--env", f"ENDPOINT={chat_service}",
                  "-y", "-d", cwd=REPO, timeout=180)
    assert launch.returncode == 0, launch.stderr
    try:
        ip = skyk("status", "--ip", "chat-gui").stdout.strip()
        base = f"http://{ip}:8080"

        def up() -> bool:
            try:
                return bool(get(f"{base}/-/health"))
            except OSError:
                return False

        wait_for(up, timeout=90, interval=0.3, what="the gui cluster's page server")

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0,
                               timeout=120)
        pieces = [chunk.choices[0].delta.content for chunk in client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "Hi there"}], stream=True)
            if chunk.choices and chunk.choices[0].delta.content]
        assert len(pieces) > 10
        assert "".join(pieces).startswith('You said "Hi there" at temperature 1, top_p 1. ')

        page = open_chat(browser, base)  # / redirects to /-/chat
        assert page.url == f"{base}/-/chat"
        page.locator("#temperature").fill("0.5")
        reply = send(page, "Hello through the gui cluster")
        assert reply.startswith('You said "Hello through the gui cluster" at temperature 0.5, ')
        screenshot(page, tmp_path, "chat-gui.png")
    finally:
        down = skyk("down", "chat-gui", "-y", timeout=180)
        assert down.returncode == 0, down.stderr


def test_chat_page_shows_the_routers_errors_and_uses_the_api_key(browser, tmp_path):  # noqa: F811
    fake = start_fake_openai(event_interval_s=0.0)
    router = start_router(tmp_path, workers=1)
    try:
        page = new_page(browser)
        page.goto(f"{router.url}/-/chat")
        # No replica yet: the router's 503 and its hint.
        expect(page.locator("#error-title")).to_contain_text("503")
        expect(page.locator("#error-title")).to_contain_text("no ready replica")
        expect(page.locator("#error-hint")).to_contain_text("no replica is ready yet")
        screenshot(page, tmp_path, "chat-503.png")
        # Send while the models cannot be listed: it says so, and the text waits.
        page.click("#error-close")
        page.fill("#prompt", "Anyone there?")
        page.press("#prompt", "Enter")
        expect(page.locator("#error-title")).to_contain_text("Not sent: 503")
        expect(page.locator("#prompt")).to_have_value("Anyone there?")
        page.fill("#prompt", "")

        key = "s3cret"
        router.set_replicas([fake.url], api_keys_sha256=[hashlib.sha256(key.encode()).hexdigest()])
        page.click("#reload-models")
        expect(page.locator("#error-title")).to_contain_text("401")
        expect(page.locator("#error-hint")).to_contain_text("Authorization: Bearer")

        page.fill("#api-key", key)
        page.press("#api-key", "Tab")  # committing the field saves the key and lists models
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#model")).to_have_value("fake-model")
        assert send(page, "Hi", streamed=False) == "Hello from the fake replica."

        page.reload()  # the key and the conversation are kept in the browser
        expect(page.locator("#api-key")).to_have_value(key)
        expect(page.locator("#model")).to_have_value("fake-model")
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#chat-list button").first).to_have_text("Hi")
        expect(page.locator(f"{REPLIES}[data-state=done] .content")).to_have_text(
            ["Hello from the fake replica."])
        expect(page.locator("#messages .message.user .content")).to_have_text(["Hi"])
        assert send(page, "Again", streamed=False) == "Hello from the fake replica."
        page.click("#new-chat")
        page.reload()
        expect(page.locator("#chat-list button")).to_have_count(1)  # an empty chat is not kept
        expect(page.locator("#messages .message.user .content")).to_have_text(["Hi", "Again"])
        screenshot(page, tmp_path, "chat-errors.png")
    finally:
        stop(router.proc)
        stop(fake.proc)
