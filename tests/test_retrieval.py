"""Hybrid retrieval on the real bundled corpus, real embedder, real Chroma."""

from __future__ import annotations

import pytest

from assistant.evidence import contains_evidence
from assistant.lexical import lexical_query
from assistant.retrieve import HybridRetriever
from assistant.schema import Chunk
from assistant.vectorstore import VectorHit

KNOWN = [
    ("Quels dispositifs de financement late stage la stratégie veut-elle renforcer ?", "Fonds TIBI"),
    ("Combien de personnes ont répondu à l'enquête du groupe de travail ?", "Répondants (25)"),
    ("Quelle taille de levée de fonds manque de solutions françaises ?", "50 M€ et plus"),
    ("Qui représente Alcatel-Lucent Enterprise dans le groupe de travail ?", "Directrice internationale"),
    ("What growth is expected for the global e-health market between 2019 and 2023?", "160 %"),
    ("Who co-chaired the working group on structuring the digital health sector?", "PICARD"),
    (
        "Quel rôle pour la Haute Autorité de santé dans l'évaluation des dispositifs ?",
        "doctrine d'évaluation harmonisée",
    ),
    ("Pourquoi les entreprises d'e-santé étudiées sont-elles en difficulté ?", "difficulté financière"),
    ("Sur quelles plateformes s'appuyer pour le travail sur les données des essais cliniques ?", "France Cohortes"),
    ("Which actor do respondents see as the most structuring for the digital health sector?", "Aucun acteur ne"),
]


@pytest.mark.parametrize(("question", "passage"), KNOWN)
def test_known_questions_find_their_passage_in_top5(corpus_retriever, question, passage):
    hits = corpus_retriever.retrieve(question, k=5)
    assert len(hits) == 5
    assert any(contains_evidence(h.chunk.text, passage) for h in hits), [h.chunk.text[:60] for h in hits]


def test_bm25_searches_an_english_question_by_its_names_when_it_has_some():
    # "health", "digital" match only the English fragments of the French corpus (job titles)
    assert lexical_query("How much weight does Europe carry in French digital health?") == "Europe French"
    assert lexical_query("What does the HDH do for start-ups?") == "HDH"
    # without a name, all its words: cognates ("consultation") are what BM25 can match
    deadline = "What was the consultation's response deadline?"
    assert lexical_query(deadline) == deadline
    french = "Quel rôle pour la Haute Autorité de santé dans l'évaluation ?"
    assert lexical_query(french) == french


def test_results_carry_metadata_and_are_diverse(corpus_retriever):
    hits = corpus_retriever.retrieve("freins réglementaires à l'innovation en santé numérique", k=5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert hit.chunk.title and hit.chunk.doc_id and hit.chunk.text
    sections = [(h.chunk.doc_id, h.chunk.section) for h in hits]
    assert corpus_retriever.max_per_section == 3
    assert max(sections.count(s) for s in sections) <= 3


def test_document_filter(corpus_retriever):
    doc = "strategie-acceleration-sante-numerique"
    hits = corpus_retriever.retrieve("recommandations des ateliers sur les business models", k=5, doc_id=doc)
    assert hits and all(h.chunk.doc_id == doc for h in hits)


def test_modes_differ_and_hybrid_fuses(corpus_retriever):
    question = "Fonds TIBI"
    lexical = corpus_retriever.retrieve(question, k=3, mode="lexical")
    dense = corpus_retriever.retrieve(question, k=3, mode="dense")
    hybrid = corpus_retriever.retrieve(question, k=3)
    assert lexical[0].lexical_rank == 1 and lexical[0].dense_rank is None
    assert dense[0].dense_rank == 1 and dense[0].lexical_rank is None
    assert "TIBI" in hybrid[0].chunk.text and hybrid[0].dense_rank and hybrid[0].lexical_rank


def test_langchain_retriever(corpus_retriever):
    docs = corpus_retriever.as_langchain(k=3).invoke("Qui co-anime le groupe de travail ?")
    assert len(docs) == 3
    assert {"doc_id", "title", "section", "page", "score"} <= set(docs[0].metadata)
    assert any("PICARD" in d.page_content or "Picard" in d.page_content for d in docs)


class _TiedIndex:
    """Two rankings that tie up to float noise, returned in an order that changes per call."""

    def __init__(self) -> None:
        self.calls = 0
        self.chunks = {
            cid: Chunk(cid, "doc", "Doc", f"Section {cid}", f"texte {cid}", i * 100, i * 100 + 50)
            for i, cid in enumerate(["c-a", "c-b", "c-c"])
        }
        self.embedder = self

    def embed_query(self, text: str) -> list[float]:
        return [1.0]

    def dense(self, vector, k, doc_id=None):
        self.calls += 1
        noise = 1e-9 if self.calls % 2 else -1e-9
        hits = [VectorHit("c-b", 0.9 + noise), VectorHit("c-a", 0.9), VectorHit("c-c", 0.8)]
        return hits if self.calls % 2 else hits[::-1]

    def lexical(self, query, k, doc_id=None):
        return (
            [("c-c", 2.0), ("c-b", 1.0), ("c-a", 1.0)] if self.calls % 2 else [("c-c", 2.0), ("c-a", 1.0), ("c-b", 1.0)]
        )

    def get(self, chunk_id):
        return self.chunks.get(chunk_id)


def test_near_ties_rank_the_same_on_every_run():
    retriever = HybridRetriever(_TiedIndex())  # type: ignore[arg-type]
    orders = {tuple(h.chunk.id for h in retriever.retrieve("question", k=3)) for _ in range(4)}
    assert len(orders) == 1


class _RankingsIndex:
    """Fixed dense and BM25 rankings over 20 chunks: e5 cosines packed within 0.06 of each
    other (as on the real corpus), BM25 with one passage far ahead (all the rare terms)."""

    def __init__(self) -> None:
        ids = [f"c-{i:02d}" for i in range(20)]
        self.chunks = {
            cid: Chunk(cid, "doc", "Doc", f"Section {i}", f"texte {cid}", i * 100, i * 100 + 50)
            for i, cid in enumerate(ids)
        }
        self.dense_hits = [VectorHit(cid, 0.86 - 0.003 * i) for i, cid in enumerate(ids)]
        self.lexical_hits = [("c-07", 25.0)] + [(cid, 3.0 - 0.1 * i) for i, cid in enumerate(ids) if cid != "c-07"]
        self.embedder = self

    def embed_query(self, text: str) -> list[float]:
        return [1.0]

    def dense(self, vector, k, doc_id=None):
        return self.dense_hits[:k]

    def lexical(self, query, k, doc_id=None):
        return self.lexical_hits[:k]

    def get(self, chunk_id):
        return self.chunks.get(chunk_id)


def test_score_fusion_keeps_how_far_a_ranking_leader_is_ahead():
    index = _RankingsIndex()
    zscore = HybridRetriever(index, fusion="zscore")  # type: ignore[arg-type]
    assert zscore.retrieve("q", k=3)[0].chunk.id == "c-07"
    # ranks alone cannot tell a runaway BM25 leader from a narrow one: the dense leader wins
    rrf = HybridRetriever(index, fusion="rrf")  # type: ignore[arg-type]
    assert rrf.retrieve("q", k=3)[0].chunk.id == "c-00"


def test_dense_weight_moves_fusion_between_the_two_rankings():
    index = _RankingsIndex()
    only_dense = HybridRetriever(index, dense_weight=1.0)  # type: ignore[arg-type]
    only_lexical = HybridRetriever(index, dense_weight=0.0)  # type: ignore[arg-type]
    assert [h.chunk.id for h in only_dense.retrieve("q", k=3)] == ["c-00", "c-01", "c-02"]
    assert [h.chunk.id for h in only_lexical.retrieve("q", k=3)] == ["c-07", "c-00", "c-01"]


def test_a_chunk_bm25_does_not_list_ranks_below_those_it_lists():
    index = _RankingsIndex()
    index.lexical_hits = [(cid, score) for cid, score in index.lexical_hits if cid != "c-00"]
    order = [h.chunk.id for h in HybridRetriever(index).retrieve("q", k=20)]  # type: ignore[arg-type]
    # not treated as an average BM25 score: the dense leader falls behind the dense runner-up
    assert order.index("c-01") < order.index("c-00")


class _TwoQueryIndex:
    """Query "a" ranks x first in both lists; query "b" ranks y first and does not list x."""

    def __init__(self) -> None:
        self.rankings = {
            1.0: ([("x", 0.9), ("y", 0.8), ("z", 0.7)], [("x", 10.0), ("y", 5.0), ("z", 1.0)]),
            2.0: ([("y", 0.9), ("z", 0.8), ("w", 0.7)], [("y", 10.0), ("z", 5.0), ("w", 1.0)]),
        }
        self.chunks = {
            cid: Chunk(cid, "doc", "Doc", f"S {cid}", f"texte {cid}", i * 100, i * 100 + 50)
            for i, cid in enumerate("wxyz")
        }
        self.embedder = self

    def embed_query(self, text: str) -> list[float]:
        return [1.0 if text == "a" else 2.0]

    def dense(self, vector, k, doc_id=None):
        return [VectorHit(cid, score) for cid, score in self.rankings[vector[0]][0]]

    def lexical(self, query, k, doc_id=None):
        return self.rankings[self.embed_query(query)[0]][1]

    def get(self, chunk_id):
        return self.chunks.get(chunk_id)


def test_a_chunk_one_query_does_not_list_gets_that_querys_floor():
    # x leads query "a" as y leads query "b", but only y is also listed by the other query
    hits = HybridRetriever(_TwoQueryIndex()).retrieve(["a", "b"], k=2)  # type: ignore[arg-type]
    assert [h.chunk.id for h in hits] == ["y", "x"]


class _FeedbackIndex:
    """2-d vectors: the query points between two chunks; records the vectors it is queried with."""

    def __init__(self) -> None:
        self.vectors_of = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8]}
        self.chunks = {
            cid: Chunk(cid, "doc", "Doc", f"S {cid}", f"texte {cid}", i * 100, i * 100 + 50)
            for i, cid in enumerate(self.vectors_of)
        }
        self.embedder = self
        self.queried: list[list[float]] = []
        self.asked_vectors: list[list[str]] = []

    def embed_query(self, text: str) -> list[float]:
        return [0.8, 0.6]

    def dense(self, vector, k, doc_id=None):
        self.queried.append(list(vector))
        sims = {cid: vector[0] * v[0] + vector[1] * v[1] for cid, v in self.vectors_of.items()}
        return [VectorHit(cid, s) for cid, s in sorted(sims.items(), key=lambda x: -x[1])]

    def lexical(self, query, k, doc_id=None):
        return [("b", 5.0), ("a", 1.0)]

    def vectors(self, ids):
        self.asked_vectors.append(list(ids))
        return {cid: self.vectors_of[cid] for cid in ids}

    def get(self, chunk_id):
        return self.chunks.get(chunk_id)


def test_feedback_moves_the_query_vector_toward_the_first_passes_top_chunks():
    index = _FeedbackIndex()
    HybridRetriever(index, feedback_chunks=2, feedback_weight=0.5).retrieve("q", k=3)  # type: ignore[arg-type]
    first_top = index.asked_vectors[0]
    assert len(first_top) == 2 and len(index.queried) == 2  # one pass, then one with feedback
    mean = [sum(index.vectors_of[c][d] for c in first_top) / 2 for d in range(2)]
    moved = [0.8 + 0.5 * mean[0], 0.6 + 0.5 * mean[1]]
    norm = (moved[0] ** 2 + moved[1] ** 2) ** 0.5
    assert index.queried[1] == pytest.approx([moved[0] / norm, moved[1] / norm])
    index = _FeedbackIndex()
    HybridRetriever(index, feedback_weight=0.0).retrieve("q", k=3)  # type: ignore[arg-type]
    assert len(index.queried) == 1 and index.asked_vectors == []  # off: a single pass


def test_stored_vectors_are_the_chunks_own(corpus_index):
    chunk = corpus_index.chunks()[0]
    vector = corpus_index.vectors([chunk.id, "no-such-chunk"])
    assert list(vector) == [chunk.id] and len(vector[chunk.id]) == 384
    top = corpus_index.dense(vector[chunk.id], 1)[0]
    assert top.id == chunk.id and top.similarity == pytest.approx(1.0, abs=1e-3)
