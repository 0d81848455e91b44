"""Test doubles for the LLM, in the style of simonw/llm's MockModel."""

from __future__ import annotations

from collections.abc import Iterator


class MockLLM:
    """Replies with queued canned answers (``enqueue``) and records every call in ``history``."""

    name = "mock"

    def __init__(self) -> None:
        self._replies: list[str] = []
        self.history: list[list[dict[str, str]]] = []

    def enqueue(self, *replies: str) -> MockLLM:
        self._replies.extend(replies)
        return self

    def stream(self, messages, *, max_tokens: int, stop=None) -> Iterator[str]:
        self.history.append(list(messages))
        if not self._replies:
            raise AssertionError("MockLLM called with no reply queued")
        reply = self._replies.pop(0)
        for start in range(0, len(reply), 7):  # stream in small pieces, like a real model
            yield reply[start : start + 7]


class MockWeighingLLM(MockLLM):
    """A ``MockLLM`` that also weighs its refusal (``llm.WeighsRefusal``), like the local model:
    ``enqueue_weight`` queues what ``weigh_refusal`` returns; ``avoiding`` records the calls
    that asked for the likeliest non-refusal reply."""

    def __init__(self) -> None:
        super().__init__()
        self._weights: list[object] = []
        self.weighed: list[list[dict[str, str]]] = []
        self.avoiding: list[tuple[str, ...]] = []

    def enqueue_weight(self, probability: float, preferred: bool) -> MockWeighingLLM:
        from assistant.llm import RefusalWeight

        self._weights.append(RefusalWeight(probability, preferred))
        return self

    def weigh_refusal(self, messages, refusals):
        self.weighed.append(list(messages))
        if not self._weights:
            raise AssertionError("MockWeighingLLM weighed with no weight queued")
        return self._weights.pop(0)

    def stream_avoiding(self, messages, refusals, *, max_tokens: int, stop=None) -> Iterator[str]:
        self.avoiding.append(tuple(refusals))
        return self.stream(messages, max_tokens=max_tokens, stop=stop)
