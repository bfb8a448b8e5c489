"""The server's foundation: the headless backend, the async bridge, conversation keys, and the
real server answering /v1/models to the official openai client."""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished
from mlx_backend.events import AnswerDelta
from mlx_backend.loading.loader import load
from mlx_backend.server.app import create_app
from mlx_backend.server.backend import EngineBackend, JobEnded, Rejected, TokenCount
from mlx_backend.server.conversations import ConversationKeys
from mlx_backend.server.streams import request_events
from tests.support.server import serving


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    model, tokenizer = load(write_random_checkpoint(tmp_path_factory.mktemp("server-tiny"), max_position_embeddings=512))
    served = EngineBackend(Engine(model, tokenizer, name="tiny"), "tiny-qwen")
    yield served
    served.close()


def _collect(backend, request) -> list[object]:
    done = threading.Event()
    items: list[object] = []

    def sink(item):
        items.append(item)
        if isinstance(item, JobEnded):
            done.set()

    backend.submit(request, sink)
    assert done.wait(60)
    return items


def test_a_request_streams_its_events_then_ends(backend):
    items = _collect(backend, ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=5, seed=1))
    assert isinstance(items[-1], JobEnded) and isinstance(items[-2], Finished)
    assert items[-2].stats.generation_tokens <= 5


def test_a_request_that_cannot_fit_is_rejected_before_any_work(backend):
    items = _collect(backend, ChatRequest(messages=(ChatMessage("user", "word " * 600),), max_tokens=5))
    assert len(items) == 2 and isinstance(items[0], Rejected) and isinstance(items[1], JobEnded)
    assert items[0].kind == "context_length_exceeded" and "tokens long" in items[0].message


def test_cancel_stops_the_running_request_within_a_token(backend):
    done = threading.Event()
    items: list[object] = []
    cancel = None

    def sink(item):
        items.append(item)
        if isinstance(item, AnswerDelta):
            cancel()
        if isinstance(item, JobEnded):
            done.set()

    cancel = backend.submit(ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=400, seed=2), sink)
    assert done.wait(60)
    [finished] = [item for item in items if isinstance(item, Finished)]
    assert finished.reason == "cancelled" and finished.stats.generation_tokens <= 2


class _RecordingBackend:
    def __init__(self):
        self.cancelled = False

    def served_model(self):
        return None

    def submit(self, request, sink, *, client=""):
        for text in ("a", "b", "c"):
            sink(AnswerDelta(text))
        return lambda: setattr(self, "cancelled", True)


def test_leaving_the_async_iteration_cancels_the_request():
    fake = _RecordingBackend()

    async def first_answer_then_leave():
        request = ChatRequest(messages=(ChatMessage("user", "hi"),))
        events = request_events(fake, request)
        async for _event in events:
            break
        await events.aclose()  # what Starlette does when the client goes away

    asyncio.run(first_answer_then_leave())
    assert fake.cancelled


def test_conversations_are_found_by_their_longest_answered_prefix():
    keys = ConversationKeys()
    first = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))
    cid = keys.conversation_for(first)
    keys.remember(cid, first, ChatMessage("assistant", "hello"))
    # The client resends with its own copy of our reply (maybe edited) and a new question.
    assert keys.conversation_for((*first, ChatMessage("assistant", "hello"), ChatMessage("user", "more"))) == cid
    assert keys.conversation_for((*first, ChatMessage("assistant", "edited"), ChatMessage("user", "more"))) == cid
    # Another conversation with the same system prompt is another conversation.
    other = keys.conversation_for((ChatMessage("system", "be brief"), ChatMessage("user", "different")))
    assert other != cid
    assert keys.conversation_for(first, client_key="abc") == "client:abc"


def test_the_official_client_lists_the_served_model(backend):
    with serving(create_app(backend)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["tiny-qwen"]


def test_cancelling_a_queued_request_drops_it_at_once_and_it_never_runs(backend):
    running_items: list[object] = []
    started = threading.Event()
    running_done = threading.Event()
    cancel_running = None

    def running_sink(item):
        running_items.append(item)
        if isinstance(item, AnswerDelta):
            started.set()
        if isinstance(item, JobEnded):
            running_done.set()

    cancel_running = backend.submit(ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=400, seed=3), running_sink)
    assert started.wait(60)
    queued_items: list[object] = []
    cancel_queued = backend.submit(ChatRequest(messages=(ChatMessage("user", "later"),), max_tokens=5), queued_items.append)
    assert backend.pending() == 1
    cancel_queued()
    # Ended while the first request still runs, without a single event of its own.
    assert queued_items == [JobEnded()] and backend.pending() == 0
    assert not running_done.is_set()
    cancel_queued()  # twice is harmless
    cancel_running()
    assert running_done.wait(60)
    assert queued_items == [JobEnded()]


def test_counting_a_prompt_does_not_wait_behind_a_running_generation(backend):
    from mlx_backend.generation.request import PromptRenderer

    started, done = threading.Event(), threading.Event()

    def running_sink(item):
        if isinstance(item, AnswerDelta):
            started.set()
        if isinstance(item, JobEnded):
            done.set()

    cancel = backend.submit(ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=400, seed=4), running_sink)
    assert started.wait(60)
    request = ChatRequest(messages=(ChatMessage("system", "be brief"), ChatMessage("user", "count me")), enable_thinking=False)
    counted = _collect_count(backend, request)
    assert not done.is_set()  # answered while the generation still runs
    cancel()
    assert done.wait(60)
    renderer = PromptRenderer(backend._engine.tokenizer)
    assert counted == [TokenCount(len(renderer.prompt(request, False))), JobEnded()]
    # A request the engine would refuse is refused here too, with the engine's message.
    [rejected, _] = _collect_count(backend, ChatRequest(messages=(ChatMessage("robot", "hi"),)))
    assert isinstance(rejected, Rejected) and "robot" in rejected.message


def _collect_count(backend, request) -> list[object]:
    done = threading.Event()
    items: list[object] = []

    def sink(item):
        items.append(item)
        if isinstance(item, JobEnded):
            done.set()

    backend.count_tokens(request, sink)
    assert done.wait(10)
    return items
