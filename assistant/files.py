"""Writing files so that a reader never sees half of one; naming the code that wrote them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def replacing(path: Path, *, binary: bool = False, durable: bool = False) -> Iterator[IO[Any]]:
    """A file handle on a temporary file beside ``path``, renamed over ``path`` once written.

    A crash or a concurrent reader sees the old file or the new one, never a partial one. The
    temporary name holds the process id, so two processes writing the same file (two eval runs
    sharing a cache) do not write into each other's; it is removed if the writing fails. With
    ``durable``, the bytes are on disk before the rename (the index's CURRENT pointer must
    survive a power cut).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to ``path`` through ``replacing``."""
    with replacing(path, durable=durable) as fh:
        fh.write(text)


def code_version(path: str | Path) -> str:
    """A short hash of a source file: saved data records the version of the code that produced it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
