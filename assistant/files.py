"""Writing small files so that a reader never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash or a concurrent reader sees the old file or the new one, never a partial one. The
    temporary name holds the process id, so two processes writing the same file (two eval runs
    sharing a cache) do not write into each other's. With ``durable``, the text is on disk
    before the rename (the index's CURRENT pointer must survive a power cut).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
