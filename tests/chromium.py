"""Headless Chromium driven by Playwright, for tests of the chat page.

Import the fixture into a test module that needs it::

    from chromium import browser  # noqa: F401 - a pytest fixture

The browser is the system's Chromium (Debian's ``chromium`` package), which
Playwright launches by path: no browser is ever downloaded. Without chromium
or the ``playwright`` package the tests are skipped, except in CI (``CI``
set, as ``.ci/run`` does, which installs both), where that is a failure.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from fakecloud.tools import missing_tool

#: Names the system's Chromium goes by (Debian's, then other distributions').
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: Generous: a loaded 2-CPU machine starts pages and answers slowly.
TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    """The system Chromium's executable, or None when it is not installed."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None




@pytest.fixture
def browser() -> Iterator:
    """A headless Chromium (a Playwright ``Browser``); closed after the test."""
    executable = chromium_path()
    if executable is None:
        missing_tool("chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_tool("playwright not installed (pip install -r dev/test-requirements.txt)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, timeout=TIMEOUT_MS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser):
    """A page in a fresh context (no stored settings or key) with generous timeouts."""
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def expect(target):
    """Playwright's retrying ``expect``, waiting up to :data:`TIMEOUT_MS`.

    Imported here, late, so a module using it still loads (and skips) without playwright.
    """
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect(target)
