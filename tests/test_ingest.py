"""Loading and structure-aware chunking."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.ingest import IngestError, chunk_document, load_document, sentence_spans

MARKDOWN = """# Rapport test

Intro du rapport. Elle présente le contexte.

## Synthèse des réponses

### Question 7

Première phrase de la question sept. Deuxième phrase, avec M. Dupont et 12,5 % des répondants. Troisième phrase !

| Mesure | Avis |
|---|---|
| Article 51 | Favorable |
| Forfait innovation | Réservé |

- premier point de la liste ;
- second point de la liste.

## Annexe

Texte de l'annexe.
"""


def _doc(tmp_path: Path, text: str, name: str = "doc.md"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_document(path)


def test_sections_become_paths_and_offsets_slice_back(tmp_path):
    doc = _doc(tmp_path, MARKDOWN)
    chunks = chunk_document(doc, max_chars=900, overlap_chars=100)
    assert doc.title == "Rapport test"
    sections = [c.section for c in chunks]
    assert "Synthèse des réponses > Question 7" in sections
    assert "Annexe" in sections
    for chunk in chunks:
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert chunk.doc_id == "doc" and chunk.title == "Rapport test"
    q7 = next(c for c in chunks if c.section.endswith("Question 7"))
    assert "| Forfait innovation | Réservé |" in q7.text and "- second point" in q7.text
    assert "Texte de l'annexe" not in q7.text  # chunks never cross a heading


def test_small_chunks_never_cut_sentences_and_keep_tables_whole(tmp_path):
    sentences = " ".join(f"Phrase numéro {i} sur le financement des start-ups en santé numérique." for i in range(40))
    table = "\n".join(["| a | b |", "|---|---|"] + [f"| ligne {i} | valeur {i} |" for i in range(5)])
    doc = _doc(tmp_path, f"# T\n\n## S\n\n{sentences}\n\n{table}\n")
    chunks = chunk_document(doc, max_chars=300, overlap_chars=80)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.text) <= 300
        assert chunk.text[0].isupper() or chunk.text.startswith("|")
        if not chunk.text.startswith("|"):
            assert chunk.text.endswith("numérique."), chunk.text[-40:]
    tables = [c for c in chunks if "| ligne 0 |" in c.text]
    assert len(tables) == 1 and "| ligne 4 |" in tables[0].text
    # overlap: consecutive chunks of one paragraph share a sentence
    assert chunks[0].end > chunks[1].start


def test_sentence_splitter_respects_french_abbreviations():
    text = "Selon M. Béjean, la filière progresse. Le Dr. Martin cite 3,5 Mds€. Fin."
    spans = [text[s:e] for s, e in sentence_spans(text)]
    assert spans == ["Selon M. Béjean, la filière progresse.", "Le Dr. Martin cite 3,5 Mds€.", "Fin."]


def test_chunk_ids_are_stable_content_hashes(tmp_path):
    first = chunk_document(_doc(tmp_path, MARKDOWN))
    second = chunk_document(_doc(tmp_path, MARKDOWN))
    assert [c.id for c in first] == [c.id for c in second]
    edited = chunk_document(_doc(tmp_path, MARKDOWN.replace("Texte de l'annexe.", "Autre annexe.")))
    assert {c.id for c in first} - {c.id for c in edited} == {first[-1].id}


def test_plain_text_headings(tmp_path):
    doc = _doc(
        tmp_path,
        "Titre du document\n\n1. Contexte\n\nLe contexte est décrit ici.\n\n1.2 Détails\n\nUn détail.\n",
        "note.txt",
    )
    chunks = chunk_document(doc)
    assert [c.section for c in chunks] == ["1. Contexte", "1. Contexte > 1.2 Détails"]


def test_pdf_pages_come_back_right(tmp_path):
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("Helvetica", size=12)
    for page_text in (
        "Premiere page. Le forfait innovation finance les essais cliniques.",
        "Deuxieme page. Le referentiel d'interoperabilite est publie par l'ANS.",
    ):
        pdf.add_page()
        pdf.multi_cell(0, 10, page_text)
    path = tmp_path / "deux-pages.pdf"
    pdf.output(str(path))
    doc = load_document(path)
    assert doc.kind == "pdf" and len(doc.page_starts) == 2
    chunks = chunk_document(doc, max_chars=80, overlap_chars=0)
    by_text = {c.text: c for c in chunks}
    page1 = next(c for t, c in by_text.items() if "forfait innovation" in t)
    page2 = next(c for t, c in by_text.items() if "interoperabilite" in t)
    assert (page1.page, page2.page) == (1, 2)
    assert doc.text[page2.start : page2.end] == page2.text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("vide.md", b"", "vide"),
        ("latin1.txt", "Données de santé".encode("latin-1"), "UTF-8"),
        ("faux.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "pas un PDF"),
        ("tronque.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "PDF"),
        ("image.png", b"\x89PNG", "non pris en charge"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError) as err:
        load_document(path)
    assert name in str(err.value) and reason in str(err.value)


def test_a_list_lead_in_is_never_left_alone_in_a_chunk(tmp_path):
    """ "… seraient par exemple :" names what the list is about: a chunk holding only it answers nothing."""
    items = "\n".join(f"- Action numéro {i} pour former les professionnels de santé au numérique ;" for i in range(6))
    lead_in = "Les actions visant à construire la confiance par la formation seraient par exemple :"
    assert len(items) <= 500 < len(items) + len(lead_in)  # the list fits a chunk, but not beside its lead-in
    doc = _doc(tmp_path, f"# T\n\n## S\n\n{lead_in}\n\n{items}\n")
    chunks = chunk_document(doc, max_chars=500, overlap_chars=80)
    first = next(c for c in chunks if lead_in in c.text)
    assert first.text.startswith(lead_in) and "- Action numéro 0" in first.text and len(first.text) <= 500
    assert all(not c.text.rstrip().endswith(":") for c in chunks)
    assert any("Action numéro 5" in c.text for c in chunks)  # the rest of the list is still indexed
