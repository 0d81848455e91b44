"""The same index code against a real Chroma server (`chroma run`), as on a shared deployment."""

from __future__ import annotations

import pytest

from assistant import servers
from assistant.index import Index
from assistant.retrieve import HybridRetriever
from tests.conftest import CORPUS


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    with servers.chroma_server(tmp_path_factory.mktemp("chroma-server"), timeout=60) as url:
        yield url


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
        Index(make_settings(chroma_url=f"http://127.0.0.1:{servers.free_port()}"), real_embedder)
