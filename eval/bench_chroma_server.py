"""Scale benchmark against a real Chroma server: ingest throughput and query latency as the
collection grows to 10,000 synthetic chunks (generated here, never committed).

    python eval/bench_chroma_server.py [--chunks 10000] [--embed]

By default the vectors are random unit vectors (384 dimensions, like e5-small) so the store
itself is measured; ``--embed`` runs the real e5 embedder too (~20 passages/s on 2 cores,
i.e. ~8 minutes for 10,000 chunks). Lexical (BM25) build time is measured on the same texts.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from assistant.embedding import embed_corpus
from assistant.lexical import LexicalIndex
from assistant.servers import chroma_server
from assistant.settings import PROJECT_ROOT, Settings
from assistant.vectorstore import ChromaStore

WORDS = [
    "interopérabilité",
    "données",
    "santé",
    "patient",
    "hôpital",
    "financement",
    "remboursement",
    "start-up",
    "télésurveillance",
    "dispositif",
    "médical",
    "évaluation",
    "réglementation",
    "filière",
    "innovation",
    "territoire",
    "plateforme",
    "éthique",
    "sécurité",
    "formation",
    "recherche",
    "marché",
    "accès",
    "essai",
    "clinique",
    "entrepôt",
    "consentement",
    "souveraineté",
]


class _RandomEmbedder:
    name = "random-384"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def _unit(self, n: int) -> np.ndarray:
        v = self._rng.normal(size=(n, 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_passages(self, texts):
        return self._unit(len(texts)).tolist()

    def embed_query(self, text):
        return self._unit(1)[0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--embed", action="store_true")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "bench_chroma_server.json")
    args = parser.parse_args()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(110)) + f" (passage {i})." for i in range(args.chunks)]
    tmp = Path(tempfile.mkdtemp())
    try:
        with chroma_server(tmp / "chroma") as url:
            settings = Settings(data_dir=tmp / "data", chroma_url=url, collection="bench")
            if args.embed:
                from assistant.embedding import build_embedder

                embedder = build_embedder(settings)
            else:
                embedder = _RandomEmbedder()
            store = ChromaStore(settings, embedder)  # type: ignore[arg-type]
            steps, done, batch = [], 0, 500
            checkpoints = {1_000, 2_500, 5_000, args.chunks}
            started = time.perf_counter()
            while done < args.chunks:
                part = texts[done : done + batch]
                ids = [f"c{done + i}" for i in range(len(part))]
                t = time.perf_counter()
                vectors = embed_corpus(embedder, part)
                t_embed = time.perf_counter() - t
                t = time.perf_counter()
                store.upsert(ids, vectors, part, [{"doc_id": f"d{(done + i) // 100}"} for i in range(len(part))])
                t_store = time.perf_counter() - t
                done += len(part)
                if done in checkpoints:
                    latencies = []
                    for _ in range(30):
                        t = time.perf_counter()
                        store.query(embedder.embed_query("financement télésurveillance"), 30)
                        latencies.append(time.perf_counter() - t)
                    steps.append(
                        {
                            "chunks": done,
                            "elapsed_s": round(time.perf_counter() - started, 1),
                            "last_batch_store_chunks_per_s": round(len(part) / t_store, 1),
                            "last_batch_embed_chunks_per_s": round(len(part) / t_embed, 1),
                            "query_median_ms": round(1000 * statistics.median(latencies), 1),
                        }
                    )
                    print(json.dumps(steps[-1]), flush=True)
            t = time.perf_counter()
            LexicalIndex.build(ids=[f"c{i}" for i in range(len(texts))], texts=texts)
            bm25_build = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "embedder": embedder.name,
        "steps": steps,
        "bm25_build_s": round(bm25_build, 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
