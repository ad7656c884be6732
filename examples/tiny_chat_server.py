"""A tiny OpenAI-compatible server that needs no GPU: ``python3 tiny_chat_server.py``.

Standard library only, so it runs with any node's plain ``python3``. Its one
model, ``tiny-chat`` (``$MODEL``), is a toy: a chat reply first repeats the
last user message and names the sampling settings it used, then continues with
words walked through a bigram table of a short built-in text, one word per
token, ``$TOKEN_DELAY`` seconds apart (default 0.05), streamed or not.

The sampling knobs act visibly:

- ``temperature``: 0 always takes the most frequent next word, so a prompt
  always gets the same reply; above 0 the next word is drawn at random, more
  evenly the higher it is.
- ``top_p``: only the likeliest next words whose probabilities add up to
  ``top_p`` are drawn from (nucleus sampling).
- ``max_tokens``: the reply stops after that many words, with
  ``finish_reason: "length"``.
- ``seed``: the random seed; by default one derived from the request, so the
  same request gets the same reply.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (``"stream": true`` for server-sent events, with
``stream_options.include_usage``).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator

MODEL = os.environ.get("MODEL", "tiny-chat")
#: OpenAI's system_fingerprint; naming the replica shows which one answered.
FINGERPRINT = f"{MODEL}-replica-{os.environ.get('SKYK_SERVE_REPLICA_ID', '0')}"
#: What the bigram table is learnt from; it wraps around, so every word has a successor.
TEXT = (
    "skyk runs AI workloads on any cloud from one YAML file. It picks the cheapest place that"
    " has the GPUs and keeps the service running. Replicas sit behind one endpoint and the"
    " router streams every token as it arrives. When a replica fails the router retries"
    " another one and the controller starts a replacement. A tiny model like this one runs on"
    " a laptop CPU, so you can try the whole path without a GPU. The same recipe serves a"
    " real model with vLLM or SGLang once the cloud has the GPUs."
)
#: A reply without max_tokens ends after this many generated sentences, or this many words.
SENTENCES = 2
DEFAULT_MAX_TOKENS = 120
STARTED = int(time.time())


def bigrams(text: str) -> dict[str, Counter]:
    """Each word of ``text`` mapped to how often each word follows it."""
    words = text.split()
    table: dict[str, Counter] = defaultdict(Counter)
    for word, following in zip(words, words[1:] + words[:1], strict=True):
        table[word][following] += 1
    return table


TABLE = bigrams(TEXT)
#: Where a generated sentence may begin (after a full stop).
STARTS = sorted({following for word, after in TABLE.items() if word.endswith(".")
                 for following in after})


class BadRequest(Exception):
    """A request the API refuses, answered in OpenAI's error format."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def next_word(word: str, temperature: float, top_p: float, rng: random.Random) -> str:
    """Pick the word after ``word``: the likeliest at temperature 0, else a draw."""
    counts = TABLE[word].most_common()  # likeliest first; ties keep the text's order
    if temperature == 0:
        return counts[0][0]
    # count ** (1 / T): T below 1 sharpens the distribution, above 1 flattens it
    # (relative to the top count, so a tiny T cannot overflow).
    top = counts[0][1]
    weights = [(count / top) ** (1 / temperature) for _, count in counts]
    total = sum(weights)
    kept, mass = 0, 0.0
    while kept < len(counts) and (kept == 0 or mass < top_p):
        mass += weights[kept] / total
        kept += 1
    return rng.choices([word for word, _ in counts[:kept]], weights[:kept])[0]


def generate(start: str, temperature: float, top_p: float, rng: random.Random) -> Iterator[str]:
    """Words walked from ``start`` until :data:`SENTENCES` sentences have ended."""
    word, ended = start, 0
    while ended < SENTENCES:
        yield word
        ended += word.endswith(".")
        word = next_word(word, temperature, top_p, rng)


def number(body: dict, name: str, default: float, low: float, high: float) -> float:
    """The request's ``name`` as a number in [low, high] (``default`` when absent)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, not {value!r}",
                         param=name)
    return float(value)


def text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def clip(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


class Completion:
    """One request's reply: the words to send, the reason it stops, token counts."""

    def __init__(self, body: dict, chat: bool) -> None:
        if body.get("model") not in (None, MODEL):
            raise BadRequest(f"The model `{body.get('model')}` does not exist.", 404, "model")
        self.temperature = number(body, "temperature", 1.0, 0.0, 2.0)
        self.top_p = number(body, "top_p", 1.0, 0.0, 1.0)
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise BadRequest(f"max_tokens must be a positive integer, not {limit!r}",
                             param="max_tokens")
        self.max_tokens = limit or DEFAULT_MAX_TOKENS
        if chat:
            opening, prompt = self._chat_opening(body.get("messages"))
        else:
            opening, prompt = [], body.get("prompt", "")
            prompt = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
        self.prompt_tokens = len(prompt.split())
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest(f"seed must be an integer, not {seed!r}", param="seed")
        if seed is None:  # the same request, the same reply
            seed = hashlib.sha256(json.dumps([prompt, self.temperature, self.top_p]).encode()).digest()
        rng = random.Random(seed)
        last = (prompt.split() or [""])[-1]
        if not chat and last in TABLE:  # a completion continues the prompt's last word
            words = list(generate(last, self.temperature, self.top_p, rng))[1:]
        else:  # a chat reply (or a prompt the model cannot continue) starts a sentence
            words = [*opening, *generate(rng.choice(STARTS), self.temperature, self.top_p, rng)]
        self.finish_reason = "length" if len(words) > self.max_tokens else "stop"
        # Tokens are words with their leading space, but for a chat reply's first.
        self.tokens = [word if i == 0 and chat else " " + word
                       for i, word in enumerate(words[:self.max_tokens])]

    def _chat_opening(self, messages: object) -> tuple[list[str], str]:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m for m in messages):
            raise BadRequest("messages must be a non-empty list of {role, content}",
                             param="messages")
        said = [text_of(m.get("content")) for m in messages if m["role"] == "user"]
        system = [text_of(m.get("content")) for m in messages if m["role"] == "system"]
        opening = f'You said "{clip(said[-1]) if said else ""}"'
        if system and system[0].strip():
            opening += f' (system prompt "{clip(system[0], 40)}")'
        opening += f" at temperature {self.temperature:g}, top_p {self.top_p:g}."
        prompt = " ".join(text_of(m.get("content")) for m in messages)
        return opening.split(), prompt

    def usage(self) -> dict:
        """OpenAI's ``usage`` object."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_tokens + len(self.tokens)}


class Handler(http.server.BaseHTTPRequestHandler):
    """The API's routes."""

    # HTTP/1.1 keeps connections open for the router's pool; streams are chunked.
    protocol_version = "HTTP/1.1"
    token_delay_s = 0.05

    def _json(self, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        if self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": STARTED, "owned_by": "skyk",
                 "max_model_len": 2048}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "NotFoundError",
                                       "param": None, "code": 404}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's API
        kinds = {"/v1/chat/completions": True, "/v1/completions": False}
        try:
            if self.path not in kinds:
                raise BadRequest(f"no route {self.path}", 404)
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except (ValueError, UnicodeDecodeError) as error:
                raise BadRequest(f"the body is not JSON: {error}") from None
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            completion = Completion(body, chat=kinds[self.path])
        except BadRequest as error:
            self._json(error.status, {"error": {
                "message": str(error), "type": "BadRequestError" if error.status == 400
                else "NotFoundError", "param": error.param, "code": error.status}})
            return
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(completion, kinds[self.path], include_usage)
        else:
            self._whole(completion, kinds[self.path])

    def _paced(self, completion: Completion) -> Iterator[tuple[str, str | None]]:
        """Each token with its finish reason (on the last one), a token's time apart."""
        for index, token in enumerate(completion.tokens):
            time.sleep(self.token_delay_s)  # the "compute" of one token
            last = index == len(completion.tokens) - 1
            yield token, completion.finish_reason if last else None

    def _whole(self, completion: Completion, chat: bool) -> None:
        text = "".join(token for token, _ in self._paced(completion))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "logprobs": None, "finish_reason": completion.finish_reason} if chat else
                  {"index": 0, "text": text, "logprobs": None,
                   "finish_reason": completion.finish_reason})
        self._json(200, {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                         "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": MODEL,
                         "system_fingerprint": FINGERPRINT, "choices": [choice],
                         "usage": completion.usage()})

    def _stream(self, completion: Completion, chat: bool, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        header = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                  "object": "chat.completion.chunk" if chat else "text_completion",
                  "created": int(time.time()), "model": MODEL, "system_fingerprint": FINGERPRINT}
        try:
            if chat:  # OpenAI's first chunk says who speaks
                self._event({**header, "choices": [{"index": 0, "delta": {
                    "role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})
            for token, finish_reason in self._paced(completion):
                choice = ({"delta": {"content": token}} if chat else {"text": token})
                self._event({**header, "choices": [
                    {"index": 0, **choice, "logprobs": None, "finish_reason": finish_reason}]})
            if include_usage:
                self._event({**header, "choices": [], "usage": completion.usage()})
            self._write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client left: stop "generating", as an engine aborts the request.
            self.close_connection = True

    def _event(self, document: dict) -> None:
        self._write(f"data: {json.dumps(document)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        """Send ``data`` as one HTTP chunk (wfile is unbuffered, so it leaves now)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's API
        pass  # one line per probe and request would drown the replica's log


def main() -> None:
    """Serve the API until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # On a node, bind $SKYK_NODE_IP: it is the address the controller probes, and
    # it lets two replicas share a port when local nodes have no namespaces.
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--token-delay", type=float,
                        default=float(os.environ.get("TOKEN_DELAY", "0.05")),
                        help="seconds per generated word (default $TOKEN_DELAY or 0.05)")
    args = parser.parse_args()
    Handler.token_delay_s = args.token_delay
    http.server.ThreadingHTTPServer.daemon_threads = True
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"{MODEL} serving on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
