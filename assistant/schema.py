"""Dataclasses passed between pipeline stages (never loose tuples)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """A passage of a source document, with where it came from.

    ``text`` is exactly ``source_text[start:end]`` of its document, so a citation can
    always be traced back to the original characters.
    """

    id: str
    doc_id: str
    title: str
    section: str
    text: str
    start: int
    end: int
    page: int | None = None
    page_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    @property
    def location(self) -> str:
        """Human-readable 'title — section — p. N' label."""
        parts = [self.title]
        if self.section:
            parts.append(self.section)
        if self.page is not None:
            pages = f"p. {self.page}" if self.page_end in (None, self.page) else f"p. {self.page}–{self.page_end}"
            parts.append(pages)
        return " — ".join(parts)


@dataclass(frozen=True)
class ScoredChunk:
    """A retrieved chunk with its fused score and the ranks that produced it."""

    chunk: Chunk
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None
    dense_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "id": c.id,
            "text": c.text,
            "doc_id": c.doc_id,
            "title": c.title,
            "section": c.section,
            "page": c.page,
            "start": c.start,
            "end": c.end,
            "score": round(self.score, 6),
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
        }


@dataclass
class Citation:
    """A numbered source as it appears in an answer: ``[n]`` → chunk + supporting snippet."""

    n: int
    chunk: Chunk
    snippet: str = ""

    def to_dict(self) -> dict[str, Any]:
        c = self.chunk
        return {
            "n": self.n,
            "id": c.id,
            "doc_id": c.doc_id,
            "title": c.title,
            "section": c.section,
            "page": c.page,
            "text": c.text,
            "snippet": self.snippet,
        }


@dataclass(frozen=True)
class Reading:
    """The passages chosen for a question, announced by ``Assistant.stream`` before the model
    writes: on a 2-core machine the local model spends ~10 s reading its prompt, and the user
    can see meanwhile which documents and sections the answer will come from."""

    sources: list[Citation]
    interpreted_question: str = ""  # the question as understood, when it differs from the words typed


@dataclass
class Timings:
    retrieval: float = 0.0
    first_token: float | None = None
    total: float = 0.0

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass
class Answer:
    """What the chat pipeline returns for one question."""

    question: str
    text: str
    refused: bool
    citations: list[Citation] = field(default_factory=list)
    sources: list[Citation] = field(default_factory=list)
    standalone_question: str = ""
    # what was answered, when it differs from the words typed: instructions to the assistant left
    # out, "la seconde" replaced by the item it points at; shown to the user
    interpreted_question: str = ""
    backend: str = ""
    timings: Timings = field(default_factory=Timings)
    refusal_reason: str = ""
    # the model's probability of opening its reply with a refusal (local backend), see llm.WeighsRefusal
    refusal_probability: float | None = None
    raw_text: str = ""  # the model's own words before citations were checked
    dropped: list[str] = field(default_factory=list)  # answer sentences no source supported
    mode: str = "generated"  # "generated" (LLM, checked), "extractive" (quoted sources) or "refused"

    @property
    def quoted_fallback(self) -> bool:
        """Sources quoted because the LLM's own answer could not be verified (not the extractive backend)."""
        return self.mode == "extractive" and self.backend != "extractive"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "standalone_question": self.standalone_question,
            "interpreted_question": self.interpreted_question,
            "answer": self.text,
            "refused": self.refused,
            "refusal_reason": self.refusal_reason,
            "refusal_probability": self.refusal_probability,
            "backend": self.backend,
            "citations": [c.to_dict() for c in self.citations],
            "sources": [s.to_dict() for s in self.sources],
            "timings": self.timings.to_dict(),
            "raw_text": self.raw_text,
            "dropped": self.dropped,
            "mode": self.mode,
        }
