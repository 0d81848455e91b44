"""Stage 3 — hybrid retrieval: dense e5 + French BM25, fused by reciprocal rank fusion,
then diversified (a cap per section, no overlapping passages) and optionally filtered by
document. ``as_langchain()`` exposes it as a LangChain retriever.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from assistant.index import Index
from assistant.schema import ScoredChunk
from assistant.settings import Settings

Mode = Literal["hybrid", "dense", "lexical"]


class HybridRetriever:
    """Ranks chunks of an ``Index`` for a question."""

    def __init__(
        self, index: Index, candidates: int = 30, rrf_k: int = 60, max_per_section: int = 2, leaders: int = 2
    ) -> None:
        self.index = index
        self.leaders = leaders
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.max_per_section = max_per_section

    @classmethod
    def from_settings(cls, index: Index, settings: Settings) -> HybridRetriever:
        return cls(index, settings.candidates, settings.rrf_k, settings.max_chunks_per_section, settings.rrf_leaders)

    def retrieve(
        self, query: str | list[str], k: int = 5, doc_id: str | None = None, mode: Mode = "hybrid"
    ) -> list[ScoredChunk]:
        """Top ``k`` chunks for ``query``; ``mode`` picks dense, lexical or both (for evaluation).

        Several queries (a follow-up with and without its context) are fused like the two
        rankings of one query: each list adds 1/(rrf_k + rank) to a chunk's score.
        """
        queries = [q.strip() for q in ([query] if isinstance(query, str) else query) if q.strip()]
        fused: dict[str, dict[str, Any]] = {}
        for text in dict.fromkeys(queries):
            if mode in ("hybrid", "dense"):
                vector = self.index.embedder.embed_query(text)
                dense = sorted(
                    self.index.dense(vector, self.candidates, doc_id), key=lambda h: _tie_safe(h.similarity, h.id)
                )
                for rank, hit in enumerate(dense, 1):
                    entry = fused.setdefault(hit.id, {"score": 0.0})
                    entry["score"] += self._rrf(rank)
                    entry.setdefault("dense_rank", rank)
                    entry.setdefault("dense_score", hit.similarity)
            if mode in ("hybrid", "lexical"):
                lexical = sorted(self.index.lexical(text, self.candidates, doc_id), key=lambda h: _tie_safe(h[1], h[0]))
                for rank, (chunk_id, _score) in enumerate(lexical, 1):
                    entry = fused.setdefault(chunk_id, {"score": 0.0})
                    entry["score"] += self._rrf(rank)
                    entry.setdefault("lexical_rank", rank)
        ranked = sorted(fused.items(), key=lambda item: _tie_safe(item[1]["score"], item[0]))
        results: list[ScoredChunk] = []
        for chunk_id, entry in ranked:
            chunk = self.index.get(chunk_id)
            if chunk is not None:
                results.append(ScoredChunk(chunk=chunk, **entry))
        return self._diversify(results, k)

    def _rrf(self, rank: int) -> float:
        """Reciprocal rank, plus a bonus for a list's leaders: plain RRF lets a chunk ranked
        ~5th by both lists beat the one chunk BM25 (or e5) alone puts first, which on this
        corpus is often the exact passage (a date, a rare term)."""
        bonus = 1.0 / self.rrf_k if rank <= self.leaders else 0.0
        return 1.0 / (self.rrf_k + rank) + bonus

    def _diversify(self, ranked: list[ScoredChunk], k: int) -> list[ScoredChunk]:
        """Keep at most ``max_per_section`` chunks per section and drop overlapping ones."""
        chosen: list[ScoredChunk] = []
        per_section: dict[tuple[str, str], int] = {}
        for item in ranked:
            c = item.chunk
            key = (c.doc_id, c.section)
            if per_section.get(key, 0) >= self.max_per_section:
                continue
            if any(
                o.chunk.doc_id == c.doc_id and _overlap(o.chunk.start, o.chunk.end, c.start, c.end) > 0.5
                for o in chosen
            ):
                continue
            chosen.append(item)
            per_section[key] = per_section.get(key, 0) + 1
            if len(chosen) == k:
                break
        return chosen

    def as_langchain(self, k: int = 5, doc_id: str | None = None) -> BaseRetriever:
        return LangChainRetriever(retriever=self, k=k, doc_id=doc_id)


def _tie_safe(score: float, chunk_id: str) -> tuple[float, str]:
    """Sort key, best first: scores equal to 6 decimals rank by chunk id, so that float noise
    (threaded matrix products embed a query a few ulps differently from run to run) cannot
    reorder near-ties and make answers and evaluations irreproducible."""
    return (-round(score, 6), chunk_id)


def _overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> float:
    inter = max(0, min(a_end, b_end) - max(a_start, b_start))
    shorter = max(1, min(a_end - a_start, b_end - b_start))
    return inter / shorter


class LangChainRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over ``HybridRetriever`` (metadata carries the citation fields)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Any
    k: int = 5
    doc_id: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        hits = self.retriever.retrieve(query, k=self.k, doc_id=self.doc_id)
        return [
            LCDocument(page_content=h.chunk.text, metadata=h.to_dict() | {"text": None}, id=h.chunk.id) for h in hits
        ]
