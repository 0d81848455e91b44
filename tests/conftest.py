"""Shared fixtures: real embedder, real Chroma, the real bundled corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.embedding import SentenceTransformerEmbedder
from assistant.index import Index
from assistant.models import prepare_embedder
from assistant.retrieve import HybridRetriever
from assistant.settings import PROJECT_ROOT, Settings

CORPUS = PROJECT_ROOT / "corpus"


class CountingEmbedder:
    """Wraps the real embedder and records how many passages it embedded."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.passages: list[str] = []

    def embed_passages(self, texts):
        self.passages.extend(texts)
        return self.inner.embed_passages(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    settings = Settings()
    return SentenceTransformerEmbedder(prepare_embedder(settings.models_dir), batch_size=16, threads=2)


@pytest.fixture
def make_settings(tmp_path: Path):
    def factory(**overrides) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(**overrides)

    return factory


@pytest.fixture
def counting_embedder(real_embedder) -> CountingEmbedder:
    return CountingEmbedder(real_embedder)


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory, real_embedder) -> Index:
    settings = Settings(data_dir=tmp_path_factory.mktemp("corpus-index"))
    index = Index(settings, real_embedder)
    report = index.sync([CORPUS])
    assert not report.failed and report.chunks > 100
    return index


@pytest.fixture(scope="session")
def corpus_retriever(corpus_index) -> HybridRetriever:
    return HybridRetriever.from_settings(corpus_index, corpus_index.settings)
