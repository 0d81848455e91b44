"""How the web app renders an answer (no browser): generated, quoted-instead, refused."""

from __future__ import annotations

from assistant.schema import Answer, Chunk, Citation, Reading
from ui.app import answer_html, streaming_html, turn_sources_html

CHUNK = Chunk("c1", "doc", "Consultation", "Constat", "Une croissance de l'ordre de 160 % est attendue.", 0, 48)
NOTE = "extraits cités tels quels"


def _answer(mode: str, backend: str = "local", refused: bool = False) -> Answer:
    citation = Citation(1, CHUNK, CHUNK.text)
    return Answer(
        question="Quelle croissance ?",
        text="Le corpus ne contient pas cette information." if refused else "Une croissance de 160 % [1].",
        refused=refused,
        citations=[] if refused else [citation],
        sources=[citation],
        backend=backend,
        mode=mode,
    )


def test_quoted_fallback_is_labelled_as_such() -> None:
    rendered = answer_html(_answer("extractive"), turn=0)
    assert NOTE in rendered and "asd-refusal" not in rendered


def test_generated_answer_and_extractive_backend_carry_no_fallback_label() -> None:
    assert NOTE not in answer_html(_answer("generated"), turn=0)
    assert NOTE not in answer_html(_answer("extractive", backend="extractive"), turn=0)


def test_refusal_uses_the_refusal_style() -> None:
    rendered = answer_html(_answer("refused", refused=True), turn=0)
    assert "asd-refusal" in rendered and NOTE not in rendered


def test_a_refusal_showing_the_nearest_passage_links_it_and_says_it_may_not_answer() -> None:
    refusal = _answer("refused", refused=True)
    refusal.text = "Je ne trouve pas … qui n'y répond peut-être pas : « Une croissance de <160 %> » [1]"
    refusal.citations = [Citation(1, CHUNK, CHUNK.text)]
    rendered = answer_html(refusal, turn=2)
    assert "asd-refusal" in rendered and "Pas de réponse vérifiable dans les documents" in rendered
    assert 'href="#' in rendered and "&lt;160 %&gt;" in rendered  # the [1] is a link; the text is escaped
    cards = turn_sources_html(refusal, turn=2)
    assert "ne répond peut-être pas" in cards and "Une croissance" in cards
    assert "Aucun passage" in turn_sources_html(_answer("refused", refused=True), turn=2)  # a plain refusal


def test_the_question_as_understood_is_shown_only_when_it_differs() -> None:
    answer = _answer("generated")
    assert "Question comprise" not in answer_html(answer, turn=0)
    answer.interpreted_question = "Et quel est le poste de « Nicole <HILL> » ?"
    rendered = answer_html(answer, turn=0)
    assert "Question comprise : Et quel est le poste de « Nicole &lt;HILL&gt; » ?" in rendered  # escaped
    refusal = _answer("refused", refused=True)
    refusal.interpreted_question = "Combien de personnes ont répondu ?"  # the instruction part left out
    assert "Question comprise : Combien de personnes ont répondu ?" in answer_html(refusal, turn=0)


def test_the_passages_being_read_are_shown_before_the_first_token() -> None:
    searching = streaming_html("")
    assert "Recherche dans les documents" in searching and "asd-reading" not in searching
    deep = Chunk("c2", "doc", "Rapport <GT>", "Résultats > Question 13 : COVID", "La crise…", 0, 9, page=12)
    reading = Reading([Citation(1, CHUNK, CHUNK.text), Citation(2, deep, deep.text)], "Quelle croissance ?")
    waiting = streaming_html("", reading)
    assert "Lecture des passages" in waiting and "asd-draft" not in waiting
    assert "[1] Consultation — Constat" in waiting
    assert "[2] Rapport &lt;GT&gt; — Question 13 : COVID, p. 12" in waiting  # deepest heading, escaped
    assert "Question comprise : Quelle croissance ?" in waiting
    writing = streaming_html("Une croissance <b>", reading)
    assert '<span class="asd-draft">Une croissance ' in writing and "<b>" not in writing and "[2] Rapport" in writing
