"""The router's ``/-/chat``: the chat page, calling the API on the router's own origin."""

from __future__ import annotations

import falcon
import falcon.asgi

from skyk_router.chat.server import PAGE_HEADERS, PAGE_PATH, page_file

__all__ = ["PAGE_PATH", "ChatPageResource"]


class ChatPageResource:
    """Serves the page at ``PAGE_PATH`` and its files below it.

    The router's own paths are open, so the page loads without an API key;
    the page sends the key the user enters with its API calls.
    """

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply with the page."""
        self._file(resp, "")

    async def on_get_file(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                          name: str) -> None:
        """Reply with the page's file ``name`` ("" for ``PAGE_PATH/``), or 404."""
        self._file(resp, name)

    @staticmethod
    def _file(resp: falcon.asgi.Response, name: str) -> None:
        found = page_file(name)
        if found is None:
            raise falcon.HTTPNotFound(description=f"the chat page has no file {name!r}")
        resp.data, resp.content_type = found
        resp.set_headers(PAGE_HEADERS)
