"""Benchmarks on this machine (not tests): ingest time, hybrid query latency, answer latency.

    python eval/bench.py [--skip-local] [--questions N] [--out docs/benchmarks.json]

Ingest is measured on a fresh data dir (models already prepared, embedder loaded
beforehand), then the re-ingest of the unchanged corpus. Query latency is the median of
hybrid retrievals over the dev-set questions. Answer latency (time to first token, total)
is measured per backend on answerable dev questions, after one warm-up question. Last,
``assistant ask`` is run in new processes, as a user runs it: once without a saved state of the
prompt prefix (the process reads the rules and examples, and saves them), then once reading it back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from assistant.chat import Assistant
from assistant.embedding import build_embedder, embed_corpus
from assistant.evaluation import percentile
from assistant.index import Index
from assistant.retrieve import HybridRetriever
from assistant.settings import PROJECT_ROOT, Settings


def _questions(limit: int | None = None, answerable_only: bool = False) -> list[str]:
    rows = [
        json.loads(line)
        for line in (PROJECT_ROOT / "eval" / "devset.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if not r.get("history")]
    if answerable_only:
        rows = [r for r in rows if r["type"] in ("factual", "position", "synthesis")]
    return [r["question"] for r in rows][:limit]


def bench_ingest_and_query(settings: Settings) -> tuple[dict, Assistant]:
    embedder = build_embedder(settings)
    embed_corpus(embedder, ["échauffement"])  # the corpus engine loaded before the clock starts
    index = Index(settings, embedder)
    started = time.perf_counter()
    report = index.sync([settings.corpus_dir])
    full = time.perf_counter() - started
    started = time.perf_counter()
    again = index.sync([settings.corpus_dir])
    unchanged = time.perf_counter() - started
    retriever = HybridRetriever.from_settings(index, settings)
    questions = _questions()
    retriever.retrieve(questions[0])
    latencies = []
    for question in questions:
        t = time.perf_counter()
        retriever.retrieve(question, k=5)
        latencies.append(time.perf_counter() - t)
    result = {
        "ingest_full_s": round(full, 2),
        "ingest_chunks": report.chunks,
        "ingest_unchanged_s": round(unchanged, 3),
        "ingest_unchanged_embedded": again.embedded,
        "hybrid_query_median_ms": round(1000 * statistics.median(latencies), 1),
        "hybrid_query_p95_ms": round(percentile([1000 * x for x in latencies], 95), 1),
        "queries": len(latencies),
    }
    return result, Assistant(settings, index, retriever)


def bench_answers(assistant: Assistant, backend: str, n: int) -> dict:
    questions = _questions(n + 1, answerable_only=True)
    assistant.ask(questions[0], backend=backend)  # warm-up: model load, prefix cache
    first, total, refused = [], [], 0
    for question in questions[1:]:
        answer = assistant.ask(question, backend=backend)
        total.append(answer.timings.total)
        refused += answer.refused
        if answer.timings.first_token is not None:
            first.append(answer.timings.first_token)
    return {
        "backend": backend,
        "questions": len(total),
        "first_token_median_s": round(statistics.median(first), 2) if first else None,
        "total_median_s": round(statistics.median(total), 2),
        "total_p95_s": round(percentile(total, 95), 2),
        "refused": refused,
    }


def bench_cold_ask(settings: Settings, question: str, local: bool = True) -> dict:
    """Wall time, first token and total of ``assistant ask --json`` in new processes (index built):
    the local model without and with its saved prompt state, then the extractive backend."""
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)  # the same model files, but no saved prompt-prefix state yet
        for entry in settings.models_dir.iterdir():
            if entry.name != "prompt-states":
                (models / entry.name).symlink_to(entry)
        env = {**os.environ, "ASSISTANT_DATA_DIR": str(settings.data_dir), "ASSISTANT_MODELS_DIR": str(models)}
        runs_to_do = [("no_saved_prefix_state", "local"), ("saved_prefix_state", "local")] if local else []
        for label, backend in [*runs_to_do, ("extractive", "extractive")]:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "assistant", "ask", question, "--backend", backend, "--json"],
                env=env,
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            timings = json.loads(done.stdout)["timings"]
            runs[label] = {
                "wall_s": round(time.perf_counter() - started, 2),
                "first_token_s": timings["first_token"],
                "total_s": timings["total"],
            }
    return {"question": question, **runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmarks.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        results, assistant = bench_ingest_and_query(settings)
        print(json.dumps(results, indent=1))
        results["answers"] = [bench_answers(assistant, "extractive", args.questions)]
        print(json.dumps(results["answers"][-1], indent=1))
        if not args.skip_local:
            results["answers"].append(bench_answers(assistant, "local", args.questions))
            print(json.dumps(results["answers"][-1], indent=1))
        results["cold_ask"] = bench_cold_ask(
            settings, _questions(1, answerable_only=True)[0], local=not args.skip_local
        )
        print(json.dumps(results["cold_ask"], indent=1))
    results["machine"] = "2 cores, no GPU (this sandbox)"
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
