"""Stage 1 — read source files and cut them into structured, traceable chunks.

Public surface: ``load_document``, ``discover``, ``chunk_document``, ``Document``,
``IngestError``, ``SUPPORTED_SUFFIXES``.

Chunks follow the document's structure: headings become a section path, chunks never
cross a heading, never cut a sentence, keep tables and lists whole where they fit, and
carry a small sentence-level overlap. Every chunk's text is an exact slice
``document.text[start:end]``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assistant.schema import Chunk

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".pdf")
MAX_FILE_BYTES = 100 * 1024 * 1024


class IngestError(Exception):
    """A file that cannot be ingested; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


@dataclass
class Document:
    """A source file turned into text, with page boundaries for PDFs."""

    doc_id: str
    path: Path
    title: str
    text: str
    kind: str  # "markdown" | "text" | "pdf"
    metadata: dict[str, str] = field(default_factory=dict)
    page_starts: list[int] = field(default_factory=list)  # offset where page i+1 begins

    def page_at(self, offset: int) -> int | None:
        if not self.page_starts:
            return None
        page = 1
        for i, start in enumerate(self.page_starts):
            if start <= offset:
                page = i + 1
            else:
                break
        return page


# --------------------------------------------------------------------------- loading


def discover(path: Path) -> list[Path]:
    """Source files under ``path`` (a file or a folder), sorted for determinism."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"Corpus introuvable : {path}")
    # every visible file is returned, so an unsupported one is reported rather than silently skipped
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not p.name.endswith(".meta.json")
    )


def doc_id_for(path: Path) -> str:
    """A stable, URL-safe id from the file name (accents folded)."""
    stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-").lower() or "document"


def read_metadata(path: Path) -> dict[str, str]:
    """Optional sidecar ``<name>.meta.json`` (title, author, date, type, source)."""
    sidecar = path.with_name(path.stem + ".meta.json")
    if not sidecar.exists():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestError(sidecar, f"métadonnées illisibles ({exc})") from exc
    return {str(k): str(v) for k, v in data.items() if v is not None}


def load_document(path: Path, doc_id: str | None = None) -> Document:
    """Read one supported file into a ``Document``; raise ``IngestError`` if it cannot."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(
            path, f"type de fichier non pris en charge ({suffix or 'sans extension'}) ; attendus : .md, .txt, .pdf"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise IngestError(path, f"fichier illisible ({exc.strerror})") from exc
    if size == 0:
        raise IngestError(path, "fichier vide")
    if size > MAX_FILE_BYTES:
        raise IngestError(path, f"fichier trop volumineux ({size / 1e6:.0f} Mo > {MAX_FILE_BYTES / 1e6:.0f} Mo)")
    metadata = read_metadata(path)
    doc_id = doc_id or doc_id_for(path)
    if suffix == ".pdf":
        text, page_starts = _read_pdf(path)
        kind = "pdf"
    else:
        text, page_starts = _read_text(path), []
        kind = "markdown" if suffix in (".md", ".markdown") else "text"
    if not text.strip():
        raise IngestError(path, "aucun texte exploitable (fichier vide ou PDF scanné sans couche texte)")
    title = metadata.get("title") or _guess_title(text, kind) or path.stem
    return Document(doc_id, path, title, text, kind, metadata, page_starts)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise IngestError(path, "fichier binaire, pas du texte")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            path, f"encodage non UTF-8 (octet invalide à la position {exc.start}) ; convertissez-le en UTF-8"
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_pdf(path: Path) -> tuple[str, list[int]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    with path.open("rb") as fh:
        if not fh.read(1024).lstrip().startswith(b"%PDF"):
            raise IngestError(path, "ce n'est pas un PDF (en-tête %PDF absent)")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise IngestError(path, "PDF chiffré (protégé par mot de passe)")
            except IngestError:
                raise
            except Exception as exc:
                raise IngestError(path, "PDF chiffré (protégé par mot de passe)") from exc
        pages = [(page.extract_text() or "") for page in reader.pages]
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
        raise IngestError(path, f"PDF corrompu ou tronqué ({type(exc).__name__}: {exc})") from exc
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for page_text in pages:
        clean = page_text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
        starts.append(offset)
        parts.append(clean)
        offset += len(clean) + 2
    return "\n\n".join(parts), starts


def _guess_title(text: str, kind: str) -> str | None:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if kind == "markdown":
            match = _MD_HEADING.match(stripped)
            if match:
                return _clean_heading(match.group(2))
            continue
        return _clean_heading(stripped)[:120]
    return None


# --------------------------------------------------------------------------- blocks

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^\s*(?:[-*+•►▪–]|\d{1,3}[.)])\s+")  # a list item's marker
_PLAIN_HEADING = re.compile(r"^(?:(\d+(?:\.\d+)*)\.?|[IVX]+\.|[A-Z]\.)\s+\S")


@dataclass
class _Block:
    kind: str  # heading | paragraph | list | table
    start: int
    end: int
    level: int = 0
    title: str = ""


def _clean_heading(raw: str) -> str:
    text = re.sub(r"<[^>]+>.*?</[^>]+>", "", raw)  # <sup>1</sup> footnote marks
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("\\", "")
    text = re.sub(r"[*_`►▶•]+", "", text)
    return re.sub(r"\s+", " ", text).strip(" :-–")


def _lines(text: str) -> Iterator[tuple[int, int, str]]:
    pos = 0
    for line in text.split("\n"):
        yield pos, pos + len(line), line
        pos += len(line) + 1


def _plain_heading_level(line: str) -> int:
    """Heading heuristic for text/PDF: short, no final period, numbered or upper case."""
    stripped = line.strip()
    if (
        not stripped
        or len(stripped) > 90
        or (stripped.endswith((".", ",", ";", ":")) and not _PLAIN_HEADING.match(stripped))
    ):
        return 0
    if stripped.endswith((".", ",", ";")):
        return 0
    match = _PLAIN_HEADING.match(stripped)
    if match and match.group(1):
        return min(match.group(1).count(".") + 1, 4)
    if match:
        return 1
    letters = [c for c in stripped if c.isalpha()]
    if len(letters) >= 4 and all(c.isupper() for c in letters):
        return 1
    return 0


def _blocks(text: str, kind: str) -> list[_Block]:
    """Split the source into headings, paragraphs, lists and tables, with offsets."""
    blocks: list[_Block] = []
    current: _Block | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            blocks.append(current)
            current = None

    for start, end, line in _lines(text):
        stripped = line.strip()
        if not stripped:
            close()
            continue
        lead = len(line) - len(line.lstrip())
        if kind == "markdown":
            match = _MD_HEADING.match(stripped)
            if match:
                close()
                title = _clean_heading(match.group(2))
                if title:
                    blocks.append(_Block("heading", start + lead, end, len(match.group(1)), title))
                continue
        elif kind in ("text", "pdf") and current is None:
            level = _plain_heading_level(stripped)
            if not blocks and not level and len(stripped) <= 120 and not stripped.endswith((".", ";", ",")):
                blocks.append(_Block("heading", start + lead, end, 0, _clean_heading(stripped)))  # title line
                continue
            if level:
                blocks.append(_Block("heading", start + lead, end, level, _clean_heading(stripped)))
                continue
        line_kind = "table" if stripped.startswith("|") else "list" if LIST_ITEM.match(line) else "paragraph"
        if current is not None and (
            current.kind == line_kind or (current.kind == "list" and line_kind == "paragraph" and lead > 0)
        ):
            current.end = end
            continue
        close()
        current = _Block(line_kind, start + lead, end)
    close()
    for block in blocks:  # trim trailing spaces so slices end on text
        while block.end > block.start and text[block.end - 1].isspace():
            block.end -= 1
    return blocks


# --------------------------------------------------------------------------- sentences

_ABBREVIATIONS = {
    "m",
    "mm",
    "mme",
    "mmes",
    "mlle",
    "dr",
    "pr",
    "st",
    "ste",
    "cf",
    "etc",
    "ex",
    "p",
    "pp",
    "vol",
    "n",
    "no",
    "art",
    "al",
    "fig",
    "env",
    "max",
    "min",
    "mr",
    "mrs",
    "vs",
    "inc",
    "ed",
    "éd",
    "coll",
    "chap",
}
_SENTENCE_END = re.compile(r"[.!?…]+[»\"”)\]]*(?:<sup>[^<]*</sup>)?(?=\s+)")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence boundaries inside ``text[start:end]`` (French-aware abbreviations)."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        stop = match.end()
        word = re.search(r"([\wÀ-ÿ]+)\W*$", text[cursor : match.start() + 1])
        token = word.group(1).lower() if word else ""
        if match.group(0).startswith(".") and (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())):
            continue
        following = text[stop:end].lstrip()
        if following and not (following[0].isupper() or following[0].isdigit() or following[0] in '«"“(*-•►[_'):
            continue
        spans.append((cursor, stop))
        cursor = stop
        while cursor < end and text[cursor].isspace():
            cursor += 1
    if cursor < end and text[cursor:end].strip():
        spans.append((cursor, end))
    return spans


def _units(text: str, block: _Block, max_chars: int, lead_in: int = 0) -> list[tuple[int, int, bool]]:
    """Packable units of a block: (start, end, breakable_before).

    Tables and lists stay one unit when they fit beside their ``lead_in`` (the length of a
    preceding "… par exemple :" sentence, which must not end up alone in a chunk); otherwise
    they split by row/item. Paragraphs split into sentences so chunks and overlaps never cut one.
    """
    if block.kind in ("table", "list"):
        if block.end - block.start + lead_in <= max_chars:
            return [(block.start, block.end, True)]
        rows: list[tuple[int, int, bool]] = []
        pattern = re.compile(r"^\s*\|" if block.kind == "table" else LIST_ITEM.pattern, re.M)
        marks = [m.start() for m in pattern.finditer(text, block.start, block.end)] or [block.start]
        marks = sorted(set([block.start, *marks]))
        for i, s in enumerate(marks):
            e = marks[i + 1] if i + 1 < len(marks) else block.end
            while e > s and text[e - 1].isspace():
                e -= 1
            if e > s:
                rows.append((s, e, True))
        return rows
    return [(s, e, i == 0) for i, (s, e) in enumerate(sentence_spans(text, block.start, block.end))]


# --------------------------------------------------------------------------- chunking


def chunk_document(document: Document, max_chars: int = 900, overlap_chars: int = 150) -> list[Chunk]:
    """Cut a document into section-bounded chunks of at most ~``max_chars`` characters."""
    text = document.text
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    section_units: list[tuple[int, int, bool]] = []

    def flush() -> None:
        if section_units:
            titles = [title for _, title in stack]
            if titles and titles[0] in (document.title, top_title):  # the document title is not a section
                titles = titles[1:]
            section = " > ".join(titles)
            for start, end in _pack(section_units, max_chars, overlap_chars, text):
                chunks.append(_make_chunk(document, section, start, end, seen))
        section_units.clear()

    blocks = _blocks(text, document.kind)
    top_title = blocks[0].title if blocks and blocks[0].kind == "heading" else None
    for block in blocks:
        if block.kind == "heading":
            flush()
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.title))
            continue
        last = section_units[-1] if section_units else None
        lead_in = last[1] - last[0] if last and _introduces(text, last) else 0
        section_units.extend(_units(text, block, max_chars, lead_in))
    flush()
    return chunks


def _pack(
    units: list[tuple[int, int, bool]], max_chars: int, overlap_chars: int, text: str = ""
) -> list[tuple[int, int]]:
    """Greedy packing of units into windows, preferring block boundaries, with overlap."""

    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        first = i
        end = units[i][1]
        j = i + 1
        while j < len(units):
            candidate_end = units[j][1]
            if candidate_end - units[first][0] > max_chars:
                break
            end = candidate_end
            j += 1
        # prefer to stop at a block boundary when the window is already well filled
        if j < len(units) and not units[j][2]:
            for k in range(j - 1, first, -1):
                if units[k][2] and units[k][0] - units[first][0] >= max_chars * 0.6:
                    j = k
                    end = units[k - 1][1]
                    break
        # an introduction ending with ":" opens the list or table that follows it
        if j < len(units) and j - 1 > first and _introduces(text, units[j - 1]):
            j -= 1
            end = units[j - 1][1]
        windows.append((units[first][0], end))
        if j >= len(units):
            break
        # overlap: restart at trailing sentences of this window (same block only)
        back = j
        while back - 1 > first and not units[back][2] and end - units[back - 1][0] <= overlap_chars:
            back -= 1
        i = back if back < j and not units[j][2] else j
    return windows


def _introduces(text: str, unit: tuple[int, int, bool]) -> bool:
    """An introduction ending with ":" opens the list or table that follows it."""
    return bool(text) and text[unit[0] : unit[1]].rstrip().endswith(":")


def _make_chunk(document: Document, section: str, start: int, end: int, seen: dict[str, int]) -> Chunk:
    text = document.text[start:end]
    key = f"{document.doc_id}\x1f{section}\x1f{text}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    count = seen.get(digest, 0)
    seen[digest] = count + 1
    chunk_id = digest if count == 0 else f"{digest}-{count}"
    page = document.page_at(start)
    page_end = document.page_at(max(start, end - 1))
    return Chunk(chunk_id, document.doc_id, document.title, section, text, start, end, page, page_end)


def iter_documents(paths: Iterable[Path]) -> Iterator[Document | IngestError]:
    """Load each path, yielding the document or the error (a bad file never stops a batch)."""
    for path in paths:
        try:
            yield load_document(path)
        except IngestError as exc:
            yield exc
