"""The chat web UI: a page for a service's OpenAI-compatible API.

``index.html``, ``chat.css`` and ``chat.js`` are the page (plain files, no
build step). The router serves them at ``/-/chat`` (:mod:`.page`);
``server.py`` serves them on a cluster of their own and relays the API
(``examples/gui.yaml``).
"""
