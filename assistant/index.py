"""Stage 2 — keep the vector store and the French BM25 index in sync with the corpus.

Public surface: ``Index`` (``open``/``sync``/``chunks``/``documents``/``dense``/``lexical``),
``SyncReport``, ``IndexBusyError``, ``IndexMissingError``.

Crash safety: new vectors are upserted first (old ones stay), then the new state
(manifest, chunks, BM25) is written to a fresh generation folder and published by an
atomic rename of ``CURRENT``; stale vectors are deleted last. A kill at any moment leaves
the previous generation usable, and the next sync repairs the rest (vectors already in
the store are not re-embedded; orphans are removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from assistant import ingest as ingest_module
from assistant.embedding import Embedder, embed_corpus
from assistant.files import code_version, write_text_atomic
from assistant.ingest import IngestError, chunk_document, discover, doc_id_for, load_document
from assistant.lexical import LexicalIndex
from assistant.schema import Chunk
from assistant.settings import Settings
from assistant.vectorstore import ChromaStore, VectorHit, VectorStore

INGEST_VERSION = 1
_CHUNKER_VERSION = code_version(ingest_module.__file__)  # a change to the chunker re-chunks the corpus
Progress = Callable[[str, int, int], None]  # (stage, done, total)


class IndexBusyError(RuntimeError):
    """Another process is updating the index."""


class IndexMissingError(RuntimeError):
    """No usable index: never built, or damaged."""


@dataclass
class FileEntry:
    doc_id: str
    path: str
    sha256: str
    title: str
    kind: str
    metadata: dict[str, str]
    chunk_ids: list[str]
    chars: int


@dataclass
class DocumentInfo:
    doc_id: str
    title: str
    path: str
    kind: str
    chunks: int
    metadata: dict[str, str]


@dataclass
class SyncReport:
    files: int = 0
    chunks: int = 0
    added: int = 0
    removed: int = 0
    embedded: int = 0
    new_files: list[str] = field(default_factory=list)
    updated_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    unchanged_files: list[str] = field(default_factory=list)
    failed: list[IngestError] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "failed"}
        data["failed"] = [{"file": str(e.path), "reason": e.reason} for e in self.failed]
        return data


@dataclass
class _State:
    generation: int
    fingerprint: str
    files: dict[str, FileEntry]
    chunks: dict[str, Chunk]
    lexical: LexicalIndex


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    sidecar = path.with_name(path.stem + ".meta.json")
    if sidecar.exists():
        digest.update(sidecar.read_bytes())
    return digest.hexdigest()


class Index:
    """The corpus index: chunks + vectors + BM25, in one consistent generation."""

    def __init__(self, settings: Settings, embedder: Embedder, store: VectorStore | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.root = settings.index_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.store: VectorStore = store or ChromaStore(settings, embedder)
        self._state: _State | None = None
        self._lock = FileLock(str(self.root / ".lock"))

    # ------------------------------------------------------------------ reading
    @property
    def fingerprint(self) -> str:
        """Embedder and chunker identity: the chunker part changes with the ingest code itself."""
        s = self.settings
        return f"{self.embedder.name}|v{INGEST_VERSION}-{_CHUNKER_VERSION}|{s.chunk_chars}|{s.chunk_overlap_chars}"

    def exists(self) -> bool:
        return (self.root / "CURRENT").exists()

    def load(self) -> None:
        """Read the current generation; raise ``IndexMissingError`` with a fix if absent or damaged."""
        state = self._read_state(required=True)
        assert state is not None
        if not state.lexical.is_current:
            # tokenized by another analyzer (an upgrade): rebuilt from the chunks, in memory; the next
            # ingest saves it. No vector is recomputed. (An ingest reads the old state only for its
            # files and chunks, and builds its own BM25: no rebuild there)
            state.lexical = _lexical_index(list(state.chunks.values()))
        self._state = state

    @property
    def state(self) -> _State:
        if self._state is None:
            self.load()
        assert self._state is not None
        return self._state

    def chunks(self) -> list[Chunk]:
        return list(self.state.chunks.values())

    def get(self, chunk_id: str) -> Chunk | None:
        return self.state.chunks.get(chunk_id)

    def documents(self) -> list[DocumentInfo]:
        return [
            DocumentInfo(e.doc_id, e.title, e.path, e.kind, len(e.chunk_ids), e.metadata)
            for e in sorted(self.state.files.values(), key=lambda e: e.doc_id)
        ]

    def dense(self, query_vector: Sequence[float], k: int, doc_id: str | None = None) -> list[VectorHit]:
        """Nearest chunks of the current generation (orphans from a crash are skipped)."""
        known = self.state.chunks
        hits = self.store.query(query_vector, k + 10, doc_id)
        return [h for h in hits if h.id in known][:k]

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored embeddings of chunks (for pseudo-relevance feedback)."""
        return self.store.vectors(chunk_ids)

    def lexical(self, query: str, k: int, doc_id: str | None = None) -> list[tuple[str, float]]:
        allowed = None
        if doc_id:
            entry = self.state.files.get(doc_id)
            allowed = set(entry.chunk_ids) if entry else set()
        return self.state.lexical.search(query, k, allowed)

    def stats(self) -> dict[str, Any]:
        state = self.state
        return {
            "documents": len(state.files),
            "chunks": len(state.chunks),
            "vectors": self.store.count(),
            "generation": state.generation,
            "store": self.store.describe(),
            "embedder": self.embedder.name,
            "index_dir": str(self.root),
        }

    # ------------------------------------------------------------------ writing
    def sync(self, sources: Sequence[Path], progress: Progress | None = None, prune: bool = True) -> SyncReport:
        """Make the index mirror the files under ``sources``.

        Unchanged files cost no embedding; a changed file re-embeds only its new chunks
        and drops its stale ones. With ``prune=False`` (uploads), other documents stay.
        A file that fails to load is reported, and its previous chunks are kept.
        """
        started = time.perf_counter()
        try:
            self._lock.acquire(timeout=0)
        except Timeout as exc:
            raise IndexBusyError(
                f"Une indexation est déjà en cours (verrou {self.root / '.lock'}). Attendez qu'elle se termine."
            ) from exc
        try:
            report = self._sync_locked(sources, progress, prune)
        finally:
            self._lock.release()
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _sync_locked(self, sources: Sequence[Path], progress: Progress | None, prune: bool) -> SyncReport:
        report = SyncReport()
        try:
            previous = self._read_state(required=False)
        except IndexMissingError:
            previous = None  # damaged state: rebuild from scratch, vectors are reused by id
        old_files = dict(previous.files) if previous else {}
        old_chunks = dict(previous.chunks) if previous else {}
        same_config = previous is not None and previous.fingerprint == self.fingerprint
        same_embedder = previous is None or previous.fingerprint.split("|")[0] == self.embedder.name

        paths: list[Path] = []
        for source in sources:
            if Path(source).exists():
                paths.extend(discover(Path(source)))
        files: dict[str, FileEntry] = {} if prune else dict(old_files)
        chunks_by_doc: dict[str, list[Chunk]] = (
            {} if prune else {d: [old_chunks[i] for i in e.chunk_ids if i in old_chunks] for d, e in old_files.items()}
        )
        taken: set[str] = set()
        for number, path in enumerate(paths, 1):
            if progress:
                progress("lecture", number - 1, len(paths))
            doc_id = doc_id_for(path)
            while doc_id in taken:
                doc_id += "-2"
            taken.add(doc_id)
            old = old_files.get(doc_id)
            try:
                digest = _sha256_file(path)
                if old and same_config and old.sha256 == digest and all(i in old_chunks for i in old.chunk_ids):
                    files[doc_id] = old
                    chunks_by_doc[doc_id] = [old_chunks[i] for i in old.chunk_ids]
                    report.unchanged_files.append(doc_id)
                    continue
                document = load_document(path, doc_id)
                doc_chunks = chunk_document(document, self.settings.chunk_chars, self.settings.chunk_overlap_chars)
                if not doc_chunks:
                    raise IngestError(path, "aucun passage exploitable après découpage")
            except IngestError as exc:
                report.failed.append(exc)
                if old:  # lose nothing: keep the last good version
                    files[doc_id] = old
                    chunks_by_doc[doc_id] = [old_chunks[i] for i in old.chunk_ids if i in old_chunks]
                continue
            except OSError as exc:
                report.failed.append(IngestError(path, f"lecture impossible ({exc})"))
                continue
            files[doc_id] = FileEntry(
                doc_id,
                str(path),
                digest,
                document.title,
                document.kind,
                document.metadata,
                [c.id for c in doc_chunks],
                len(document.text),
            )
            chunks_by_doc[doc_id] = doc_chunks
            (report.updated_files if old else report.new_files).append(doc_id)
        if progress:
            progress("lecture", len(paths), len(paths))

        new_chunks: dict[str, Chunk] = {c.id: c for doc in files for c in chunks_by_doc.get(doc, [])}
        report.removed_files = sorted(set(old_files) - set(files))
        report.files = len(files)
        report.chunks = len(new_chunks)
        report.added = len(set(new_chunks) - set(old_chunks))
        report.removed = len(set(old_chunks) - set(new_chunks))

        # 1. vectors for chunks the store does not hold yet (crash leftovers are reused)
        if not same_embedder:  # vectors of another model are useless: start afresh
            self.store.delete(sorted(self.store.ids()))
        in_store = self.store.ids()  # a new chunker reuses the vectors of chunks it cuts identically
        missing = [c for c in new_chunks.values() if c.id not in in_store]
        self._embed_and_upsert(missing, progress)
        report.embedded = len(missing)

        # 2. publish the new generation atomically
        generation = (previous.generation if previous else self._last_generation()) + 1
        ordered = list(new_chunks.values())
        lexical = _lexical_index(ordered)
        self._write_generation(generation, files, ordered, lexical)

        # 3. garbage: stale vectors and old generations
        stale = (in_store | set(old_chunks)) - set(new_chunks)
        if stale:
            self.store.delete(sorted(stale))
        self._remove_old_generations(keep=generation)
        self._state = _State(generation, self.fingerprint, files, new_chunks, lexical)
        return report

    def _embed_and_upsert(self, chunks: list[Chunk], progress: Progress | None) -> None:
        batch = max(1, self.settings.embed_batch_size * 2)
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            if progress:
                progress("embeddings", start, len(chunks))
            vectors = embed_corpus(self.embedder, [_embedding_text(c) for c in part])
            self.store.upsert([c.id for c in part], vectors, [c.text for c in part], [_metadata(c) for c in part])
        if progress:
            progress("embeddings", len(chunks), len(chunks))

    # ------------------------------------------------------------------ generations on disk
    def _generation_dir(self, generation: int) -> Path:
        return self.root / f"gen-{generation:06d}"

    def _last_generation(self) -> int:
        numbers = [int(p.name[4:]) for p in self.root.glob("gen-*") if p.name[4:].isdigit()]
        return max(numbers, default=0)

    def _write_generation(
        self, generation: int, files: dict[str, FileEntry], chunks: list[Chunk], lexical: LexicalIndex
    ) -> None:
        folder = self._generation_dir(generation)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        manifest = {
            "generation": generation,
            "fingerprint": self.fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {d: e.__dict__ for d, e in files.items()},
            "chunk_count": len(chunks),
        }
        with (folder / "chunks.jsonl").open("w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        lexical.save(folder / "bm25")
        write_text_atomic(folder / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1), durable=True)
        write_text_atomic(self.root / "CURRENT", folder.name, durable=True)

    def _remove_old_generations(self, keep: int) -> None:
        for folder in self.root.glob("gen-*"):
            if folder.name != self._generation_dir(keep).name:
                shutil.rmtree(folder, ignore_errors=True)

    def _read_state(self, required: bool) -> _State | None:
        pointer = self.root / "CURRENT"
        rebuild = "Reconstruisez-le avec `assistant ingest` (ou `make run`)."
        if not pointer.exists():
            if required:
                raise IndexMissingError(f"Aucun index dans {self.root}. {rebuild}")
            return None
        folder = self.root / pointer.read_text(encoding="utf-8").strip()
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            chunks = {}
            with (folder / "chunks.jsonl").open(encoding="utf-8") as fh:
                for line in fh:
                    chunk = Chunk.from_dict(json.loads(line))
                    chunks[chunk.id] = chunk
            if len(chunks) != manifest["chunk_count"]:
                raise ValueError(f"{len(chunks)} passages lus, {manifest['chunk_count']} attendus")
            lexical = LexicalIndex.load(folder / "bm25")
            if lexical.ids != list(chunks):
                raise ValueError("index lexical désaligné")
            files = {d: FileEntry(**e) for d, e in manifest["files"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexMissingError(f"Index endommagé dans {folder} ({exc}). {rebuild}") from exc
        return _State(manifest["generation"], manifest["fingerprint"], files, chunks, lexical)

    def verify(self) -> list[str]:
        """Problems that would make answers wrong (missing vectors…); empty when healthy."""
        problems = []
        missing = set(self.state.chunks) - self.store.ids()
        if missing:
            problems.append(
                f"{len(missing)} passages sans vecteur dans {self.store.describe()} : relancez `assistant ingest`."
            )
        return problems


def _embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: section context, then the passage."""
    head = f"{chunk.section}\n" if chunk.section else ""
    return f"{head}{chunk.text}"


def _lexical_index(chunks: list[Chunk]) -> LexicalIndex:
    """BM25 over the chunks' title, section path and text."""
    return LexicalIndex.build([c.id for c in chunks], [f"{c.title}\n{c.section}\n{c.text}" for c in chunks])


def _metadata(chunk: Chunk) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "section": chunk.section,
        "page": chunk.page if chunk.page is not None else -1,
        "start": chunk.start,
        "end": chunk.end,
    }
