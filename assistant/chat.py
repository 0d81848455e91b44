"""Stage 5 — the pipeline object every shell (CLI, web UI, eval harness) runs.

``Assistant`` owns the index, the retriever and the answer generator; ``Conversation``
holds one user's history. Placeholder until the chat chain lands.
"""

from __future__ import annotations

from assistant.embedding import build_embedder
from assistant.index import Index
from assistant.retrieve import HybridRetriever
from assistant.settings import Settings


class Assistant:
    def __init__(self, settings: Settings, index: Index, retriever: HybridRetriever) -> None:
        self.settings = settings
        self.index = index
        self.retriever = retriever

    @classmethod
    def from_settings(cls, settings: Settings, load_llm: bool = True) -> Assistant:
        index = Index(settings, build_embedder(settings))
        index.load()
        retriever = HybridRetriever(index, settings.candidates, settings.rrf_k, settings.max_chunks_per_section)
        return cls(settings, index, retriever)
