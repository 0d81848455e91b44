"""Incremental, crash-safe indexing on the real embedder and a real Chroma."""

from __future__ import annotations

import shutil

import pytest
from filelock import FileLock

from assistant.index import Index, IndexBusyError, IndexMissingError
from assistant.lexical import ANALYZER_VERSION, LexicalIndex
from assistant.retrieve import HybridRetriever

DOC_A = """# Document A

## Financement

Le forfait innovation permet une prise en charge dérogatoire des dispositifs médicaux innovants. Il est piloté par la HAS.

## Interopérabilité

Le cadre d'interopérabilité des systèmes d'information de santé est publié par l'Agence du numérique en santé.
"""
DOC_B = """# Document B

## Données

Le Health Data Hub facilite l'accès aux données de santé pour la recherche. Les projets passent par un comité éthique.
"""


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.md").write_text(DOC_A, encoding="utf-8")
    (folder / "b.md").write_text(DOC_B, encoding="utf-8")
    return folder


def test_reingest_unchanged_does_no_embedding(make_settings, counting_embedder, corpus):
    index = Index(make_settings(), counting_embedder)
    first = index.sync([corpus])
    assert first.files == 2 and first.embedded == first.chunks == len(counting_embedder.passages) > 0
    counting_embedder.passages.clear()
    again = Index(make_settings(), counting_embedder).sync([corpus])
    assert counting_embedder.passages == [] and again.embedded == 0
    assert sorted(again.unchanged_files) == ["a", "b"] and again.chunks == first.chunks


def test_changed_file_reembeds_only_its_new_chunks(make_settings, counting_embedder, corpus):
    index = Index(make_settings(), counting_embedder)
    index.sync([corpus])
    old_ids = {c.id for c in index.chunks() if c.doc_id == "a"}
    counting_embedder.passages.clear()
    (corpus / "a.md").write_text(DOC_A.replace("piloté par la HAS", "piloté par le ministère"), encoding="utf-8")
    report = index.sync([corpus])
    assert report.updated_files == ["a"] and report.unchanged_files == ["b"]
    assert report.embedded == 1 and len(counting_embedder.passages) == 1
    assert "ministère" in counting_embedder.passages[0]
    new_ids = {c.id for c in index.chunks() if c.doc_id == "a"}
    assert len(old_ids - new_ids) == 1 and report.removed == 1
    assert index.store.ids() == {c.id for c in index.chunks()}  # stale vector removed


def test_removed_file_and_failed_file(make_settings, counting_embedder, corpus):
    index = Index(make_settings(), counting_embedder)
    index.sync([corpus])
    b_ids = {c.id for c in index.chunks() if c.doc_id == "b"}
    (corpus / "b.md").write_bytes(b"\xff\xfe donn\xe9es")  # now unreadable as UTF-8
    (corpus / "c.txt").write_text("", encoding="utf-8")
    report = index.sync([corpus])
    assert {f.path.name for f in report.failed} == {"b.md", "c.txt"}
    assert {c.id for c in index.chunks() if c.doc_id == "b"} == b_ids  # last good version kept
    (corpus / "b.md").unlink()
    (corpus / "c.txt").unlink()
    report = index.sync([corpus])
    assert report.removed_files == ["b"] and not any(c.doc_id == "b" for c in index.chunks())


def test_search_finds_passage_and_filters_by_document(make_settings, real_embedder, corpus):
    index = Index(make_settings(), real_embedder)
    index.sync([corpus])
    retriever = HybridRetriever(index)
    hits = retriever.retrieve("Qui publie le cadre d'interopérabilité ?", k=2)
    assert "Agence du numérique en santé" in hits[0].chunk.text
    assert hits[0].chunk.section == "Interopérabilité"
    only_b = retriever.retrieve("Qui publie le cadre d'interopérabilité ?", k=3, doc_id="b")
    assert only_b and {h.chunk.doc_id for h in only_b} == {"b"}


def test_concurrent_ingest_is_refused(make_settings, real_embedder, corpus):
    settings = make_settings()
    index = Index(settings, real_embedder)
    with FileLock(str(settings.index_dir / ".lock")), pytest.raises(IndexBusyError, match="déjà en cours"):
        index.sync([corpus])


def test_missing_or_damaged_index_says_how_to_rebuild(make_settings, real_embedder, corpus):
    settings = make_settings()
    with pytest.raises(IndexMissingError, match="assistant ingest"):
        Index(settings, real_embedder).load()
    index = Index(settings, real_embedder)
    index.sync([corpus])
    current = (settings.index_dir / "CURRENT").read_text().strip()
    (settings.index_dir / current / "chunks.jsonl").write_text("{broken", encoding="utf-8")
    with pytest.raises(IndexMissingError, match="endommagé"):
        Index(settings, real_embedder).load()
    # the next ingest repairs it, reusing the vectors already in Chroma
    report = Index(settings, real_embedder).sync([corpus])
    assert report.embedded == 0 and report.chunks > 0


def test_an_index_tokenized_by_another_analyzer_is_rebuilt_when_loaded(make_settings, counting_embedder, corpus):
    """After an upgrade that changes stopwords or stemming, the saved BM25 tokens no longer match the
    queries'; loading rebuilds them from the chunks, without recomputing a vector."""
    settings = make_settings()
    Index(settings, counting_embedder).sync([corpus])
    current = (settings.index_dir / "CURRENT").read_text().strip()
    (settings.index_dir / current / "bm25" / "analyzer.txt").write_text("an-old-analyzer", encoding="utf-8")
    counting_embedder.passages.clear()
    index = Index(settings, counting_embedder)
    index.load()
    assert index.state.lexical.analyzer == ANALYZER_VERSION and index.state.lexical.is_current
    assert counting_embedder.passages == []
    (best_id, _), *_ = index.lexical("forfait innovation", k=1)
    assert "forfait innovation" in index.get(best_id).text
    # the next ingest saves it tokenized by this version
    Index(settings, counting_embedder).sync([corpus])
    republished = (settings.index_dir / "CURRENT").read_text().strip()
    assert LexicalIndex.load(settings.index_dir / republished / "bm25").is_current


def test_interrupted_publish_keeps_previous_generation(make_settings, counting_embedder, corpus):
    """Vectors written but the new generation never published (a crash) → old state still answers."""
    settings = make_settings()
    index = Index(settings, counting_embedder)
    index.sync([corpus])
    before = {c.id for c in index.chunks()}
    (corpus / "a.md").write_text(
        DOC_A + "\n## Ajout\n\nUn paragraphe ajouté sur la télésurveillance.\n", encoding="utf-8"
    )
    original = Index._write_generation

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # dies between the vector upsert and the publish

    Index._write_generation = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            Index(settings, counting_embedder).sync([corpus])
    finally:
        Index._write_generation = original
    survivor = Index(settings, counting_embedder)
    assert {c.id for c in survivor.chunks()} == before
    assert HybridRetriever(survivor).retrieve("Health Data Hub", k=1)[0].chunk.doc_id == "b"
    counting_embedder.passages.clear()
    report = Index(settings, counting_embedder).sync([corpus])
    assert report.embedded == 0 and any("télésurveillance" in c.text for c in survivor.chunks()) is False
    assert any("télésurveillance" in c.text for c in Index(settings, counting_embedder).chunks())
    shutil.rmtree(settings.data_dir)
