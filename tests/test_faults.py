"""Bad files and interrupted ingests: clear errors, nothing lost, the previous index still answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.index import Index
from assistant.retrieve import HybridRetriever

GOOD = "# Guide\n\n## Financement\n\nLe fonds Delta soutient les dispositifs de télésurveillance à hauteur de 2 millions d'euros.\n"


def _guide_corpus(tmp_path: Path) -> Path:
    """A one-document corpus that indexes cleanly."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "guide.md").write_text(GOOD, encoding="utf-8")
    return corpus


def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir), "PYTHONWARNINGS": "ignore"}


def _bad_files(folder: Path) -> dict[str, str]:
    """Write one file per fault family; return name → expected words of its error."""
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    (folder / "vide.md").write_bytes(b"")
    (folder / "latin1.txt").write_bytes("Données de santé, réglementation".encode("latin-1"))
    (folder / "image.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    (folder / "notes.docx").write_bytes(b"PK\x03\x04" + os.urandom(64))
    with (folder / "enorme.txt").open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # sparse: no disk used, size checked before reading
    scanned = FPDF()
    scanned.add_page()
    scanned.rect(20, 20, 100, 60, style="F")  # drawing only, no text layer
    scanned.output(str(folder / "scan.pdf"))
    text_pdf = FPDF()
    text_pdf.add_page()
    text_pdf.set_font("Helvetica", size=12)
    text_pdf.multi_cell(0, 10, "Un rapport confidentiel sur la sante numerique.")
    text_pdf.output(str(folder / "source.pdf"))
    writer = PdfWriter()
    for page in PdfReader(str(folder / "source.pdf")).pages:
        writer.add_page(page)
    writer.encrypt("secret")
    with (folder / "chiffre.pdf").open("wb") as fh:
        writer.write(fh)
    data = (folder / "source.pdf").read_bytes()
    (folder / "tronque.pdf").write_bytes(data[: len(data) // 3])
    (folder / "source.pdf").unlink()
    return {
        "vide.md": "vide",
        "latin1.txt": "UTF-8",
        "image.pdf": "pas un PDF",
        "notes.docx": "non pris en charge",
        "enorme.txt": "trop volumineux",
        "scan.pdf": "aucun texte",
        "chiffre.pdf": "chiffré",
        "tronque.pdf": "PDF",
    }


def test_bad_files_are_reported_and_the_rest_is_ingested(tmp_path):
    corpus = _guide_corpus(tmp_path)
    expected = _bad_files(corpus)
    result = _cli("ingest", str(corpus), "--json", env=_env(tmp_path / "data"))
    assert result.returncode == 1, result.stderr  # some files failed
    report = json.loads(result.stdout)
    reasons = {Path(f["file"]).name: f["reason"] for f in report["failed"]}
    assert set(reasons) == set(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    assert report["files"] == 1 and report["new_files"] == ["guide"]
    assert "Traceback" not in result.stderr


def test_questions_that_are_unusable_get_a_message_not_a_traceback(tmp_path):
    corpus = _guide_corpus(tmp_path)
    env = _env(tmp_path / "data")
    assert _cli("ingest", str(corpus), env=env).returncode == 0
    for question in ["", "   ", "x" * 20000, "\x01\x02\x03\x1b\x7f"]:
        result = _cli("ask", question, "--backend", "extractive", env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "question" in result.stderr.lower()


def _corpus_with(folder: Path, n_docs: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(n_docs):
        paragraphs = "\n\n".join(
            f"Le projet {i}-{j} étudie l'interopérabilité des dossiers patients dans la région {j}. "
            f"Il mobilise {100 + j} soignants et un budget de {i + j} millions d'euros."
            for j in range(12)
        )
        (folder / f"doc{i:03d}.md").write_text(f"# Document {i}\n\n## Partie\n\n{paragraphs}\n", encoding="utf-8")


@pytest.mark.parametrize("delay", [1.5, 4.0, 7.0])
def test_sigkill_during_ingest_keeps_previous_index_and_next_ingest_repairs(
    tmp_path, real_embedder, make_settings, delay
):
    corpus = _guide_corpus(tmp_path)
    data = tmp_path / "data"
    env = _env(data)
    assert _cli("ingest", str(corpus), env=env).returncode == 0
    settings = make_settings(data_dir=data)
    before = {c.id for c in Index(settings, real_embedder).chunks()}

    _corpus_with(corpus, 25)  # enough new text to keep the embedder busy for a while
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "ingest", str(corpus)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    survivor = Index(settings, real_embedder)
    chunks = {c.id for c in survivor.chunks()}
    assert chunks == before or len(chunks) > len(before)  # the old generation, or the complete new one
    hits = HybridRetriever(survivor).retrieve("fonds Delta télésurveillance", k=3)
    assert hits and "Delta" in hits[0].chunk.text

    result = _cli("ingest", str(corpus), "--json", env=env)
    assert result.returncode == 0, result.stderr
    repaired = Index(settings, real_embedder)
    assert len(repaired.chunks()) == json.loads(result.stdout)["chunks"] > len(before)
    assert repaired.verify() == [] and repaired.store.ids() == {c.id for c in repaired.chunks()}


def test_second_concurrent_ingest_is_refused_with_a_clear_message(tmp_path):
    from filelock import FileLock

    corpus = _guide_corpus(tmp_path)
    data = tmp_path / "data"
    (data / "index").mkdir(parents=True)
    with FileLock(str(data / "index" / ".lock")):
        result = _cli("ingest", str(corpus), env=_env(data))
    assert result.returncode == 2 and "déjà en cours" in result.stderr


def test_corrupted_index_is_detected_at_start(tmp_path):
    corpus = _guide_corpus(tmp_path)
    data = tmp_path / "data"
    env = _env(data)
    assert _cli("ingest", str(corpus), env=env).returncode == 0
    generation = (data / "index" / "CURRENT").read_text().strip()
    (data / "index" / generation / "manifest.json").write_text("{", encoding="utf-8")
    result = _cli("search", "Delta", env=env)
    assert result.returncode == 2 and "endommagé" in result.stderr and "assistant ingest" in result.stderr


def test_info_names_the_llama_cpp_build_and_finds_no_problem_on_the_cpu_that_built_it(tmp_path):
    corpus = _guide_corpus(tmp_path)
    env = _env(tmp_path / "data")
    assert _cli("ingest", str(corpus), env=env).returncode == 0
    result = _cli("info", "--json", env=env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    # the setup built for this CPU: AVX2 at least (AVX512 where it has it), and nothing it lacks
    assert "AVX2" in info["llama_cpp"] and info["problems"] == []
