"""The no-GPU chat recipe (examples/serve-cpu-chat.yaml) served on the local cloud and
used with the official OpenAI client, streamed and not, then torn down without leftovers."""

from __future__ import annotations

import openai
import pytest
from lifecycle_helpers import wait_for
from serve_helpers import CPU_CHAT_TASK, needs_router, running_service

pytestmark = [
    pytest.mark.slow,
    needs_router,
]

HELLO = [{"role": "user", "content": "Hello skyk"}]


@pytest.fixture
def client(skyk, isolated_home):
    """An OpenAI client on the endpoint of the recipe's 2-replica service."""
    with running_service(skyk, isolated_home, "chat", CPU_CHAT_TASK, replicas=2) as endpoint:
        yield openai.OpenAI(base_url=f"http://{endpoint}/v1", api_key="unused", max_retries=0,
                            timeout=120)


def test_openai_client_through_the_cpu_chat_service(client):
    assert [model.id for model in client.models.list()] == ["tiny-chat"]

    stream = client.chat.completions.create(model="tiny-chat", messages=HELLO, stream=True,
                                            temperature=0, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    streamed = "".join(pieces)
    assert len(pieces) > 10  # word by word
    assert streamed.startswith('You said "Hello skyk" at temperature 0, top_p 1. ')
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(pieces)

    # Temperature 0 is greedy: the same request gets the same reply, streamed or not.
    whole = client.chat.completions.create(model="tiny-chat", messages=HELLO, temperature=0)
    assert whole.choices[0].message.content == streamed
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == len(pieces)

    short = client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=3)
    assert short.choices[0].message.content == 'You said "Hello'
    assert short.choices[0].finish_reason == "length"

    warm = client.chat.completions.create(model="tiny-chat", messages=HELLO, temperature=1.5,
                                          top_p=0.5, max_tokens=12)
    assert "at temperature 1.5, top_p 0.5." in warm.choices[0].message.content

    completion = client.completions.create(model="tiny-chat", prompt="The router", max_tokens=4)
    assert len(completion.choices[0].text.split()) == 4

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO)

    # Both replicas answer, each naming itself in system_fingerprint.
    def fingerprints() -> set[str]:
        return {client.chat.completions.create(model="tiny-chat", messages=HELLO,
                                               max_tokens=1).system_fingerprint
                for _ in range(8)}

    wait_for(lambda: fingerprints() == {"tiny-chat-replica-1", "tiny-chat-replica-2"},
             timeout=60, interval=0.5, what="both replicas to answer")
