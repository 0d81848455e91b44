"""Vector store protocol and its Chroma implementation (embedded or client/server).

The pipeline only needs upsert / delete / query / ids; a Chroma server is one setting
away (``ASSISTANT_CHROMA_URL``), with no change to the pipeline.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from assistant.embedding import Embedder
from assistant.settings import Settings

# Chroma tries to rebuild a collection's embedding function from its stored name; ours is
# always passed in explicitly, so that attempt (and its warning) is expected.
warnings.filterwarnings("ignore", message="Could not reconstruct embedding function assistant")


@dataclass(frozen=True)
class VectorHit:
    id: str
    similarity: float


class VectorStore(Protocol):
    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def query(self, embedding: Sequence[float], k: int, doc_id: str | None = None) -> list[VectorHit]: ...

    def ids(self) -> set[str]: ...

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]: ...

    def count(self) -> int: ...

    def describe(self) -> str: ...


class StoreUnavailableError(RuntimeError):
    """The vector store cannot be reached or opened."""


class _ChromaEmbeddingFunction:
    """Chroma-side adapter so the collection embeds with *our* model, never a download."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def __call__(self, input: Sequence[str]) -> list[list[float]]:
        return self._embedder.embed_passages(list(input))

    def embed_query(self, input: Sequence[str]) -> list[list[float]]:
        return [self._embedder.embed_query(text) for text in input]

    @staticmethod
    def name() -> str:
        return "assistant-multilingual-e5-small"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _ChromaEmbeddingFunction:
        raise NotImplementedError("the assistant always passes its own embedder")

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]

    def is_legacy(self) -> bool:
        return False


class ChromaStore:
    """Chroma collection with cosine space; embeddings are computed by the caller."""

    def __init__(self, settings: Settings, embedder: Embedder, persist_dir: Path | None = None) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        url = settings.chroma_url
        host, port = settings.chroma_host, settings.chroma_port
        if url:
            parsed = urlparse(url if "://" in url else f"http://{url}")
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 8000)
        directory = persist_dir or settings.chroma_dir
        self._where = f"serveur Chroma {host}:{port}" if host else f"Chroma local {directory}"
        try:
            if host:
                self._client = chromadb.HttpClient(host=host, port=port, settings=chroma_settings)
            else:
                directory.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(directory), settings=chroma_settings)
            self._collection = self._client.get_or_create_collection(
                settings.collection,
                embedding_function=_ChromaEmbeddingFunction(embedder),  # type: ignore[arg-type]
                metadata={"hnsw:space": "cosine"},
            )
        except Exception as exc:  # chromadb raises many types (connection, sqlite, value)
            raise StoreUnavailableError(
                f"Impossible d'ouvrir le {getattr(self, '_where', 'magasin Chroma')} : {exc}"
            ) from exc

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        if ids:
            self._collection.upsert(
                ids=list(ids),
                embeddings=[list(e) for e in embeddings],
                documents=list(texts),
                metadatas=list(metadatas),
            )

    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            self._collection.delete(ids=ids[start : start + 500])

    def query(self, embedding: Sequence[float], k: int, doc_id: str | None = None) -> list[VectorHit]:
        total = self.count()
        if total == 0:
            return []
        result = self._collection.query(
            query_embeddings=[list(embedding)],
            n_results=min(k, total),
            where={"doc_id": doc_id} if doc_id else None,
            include=["distances"],
        )
        ids = result["ids"][0]
        distances = result["distances"][0] if result.get("distances") else [0.0] * len(ids)
        return [VectorHit(i, 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]:
        """The stored embeddings of ``ids`` (those found)."""
        if not ids:
            return {}
        page = self._collection.get(ids=list(ids), include=["embeddings"])
        embeddings = page.get("embeddings")
        if embeddings is None:
            return {}
        return {i: [float(x) for x in e] for i, e in zip(page["ids"], embeddings, strict=True)}

    def ids(self) -> set[str]:
        found: set[str] = set()
        offset = 0
        while True:
            page = self._collection.get(include=[], limit=5000, offset=offset)
            found.update(page["ids"])
            if len(page["ids"]) < 5000:
                return found
            offset += 5000

    def count(self) -> int:
        return self._collection.count()

    def describe(self) -> str:
        return self._where
