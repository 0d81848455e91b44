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
