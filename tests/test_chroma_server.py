"""The same index code against a real Chroma server (`chroma run`), as on a shared deployment."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.index import Index
from assistant.retrieve import HybridRetriever
from tests.conftest import CORPUS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    process = subprocess.Popen(
        [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("chroma run did not start within 60 s")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


def test_index_and_search_through_a_chroma_server(chroma_server, make_settings, counting_embedder):
    settings = make_settings(chroma_url=chroma_server)
    index = Index(settings, counting_embedder)
    assert "serveur Chroma" in index.store.describe()
    report = index.sync([CORPUS])
    assert report.chunks > 100 and report.embedded == report.chunks
    assert index.store.count() == report.chunks
    hits = HybridRetriever(index).retrieve("Quels fonds renforcer pour le financement late stage ?", k=5)
    assert any("TIBI" in h.chunk.text for h in hits)
    # a second client (another machine) sees the same vectors: nothing to embed
    counting_embedder.passages.clear()
    again = Index(make_settings(chroma_url=chroma_server), counting_embedder).sync([CORPUS])
    assert again.embedded == 0 and counting_embedder.passages == []


def test_unreachable_server_gives_a_clear_error(make_settings, real_embedder):
    from assistant.vectorstore import StoreUnavailableError

    with pytest.raises(StoreUnavailableError, match=r"serveur Chroma 127\.0\.0\.1"):
        Index(make_settings(chroma_url=f"http://127.0.0.1:{_free_port()}"), real_embedder)
