"""Load test of the running web app over its HTTP API (127.0.0.1 only).

    python eval/load.py --users 8 --seconds 120 --backend extractive
    python eval/load.py --users 4 --seconds 120 --backend local

Starts ``assistant serve`` on a free local port (or uses ``--url``), then runs N simulated
users in parallel, each asking dev-set questions one after another through the app's
``/ask`` endpoint (the same path as the page: model queue included) until the time is up.
Reports errors, p50/p95 latency and throughput, and appends them to docs/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from assistant.servers import ServerStartError, free_port, start_listening, stop

ROOT = Path(__file__).resolve().parent.parent


def _questions() -> list[str]:
    rows = [
        json.loads(line) for line in (ROOT / "eval" / "devset.jsonl").read_text(encoding="utf-8").splitlines() if line
    ]
    return [r["question"] for r in rows if not r.get("history")]


def _start_app(port: int, backend: str) -> subprocess.Popen:
    env = {**os.environ, "ASSISTANT_BACKEND": backend, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "assistant", "serve", "--host", "127.0.0.1", "--port", str(port)]
    try:
        return start_listening(command, port, timeout=180, env=env)
    except ServerStartError as exc:
        raise SystemExit(f"the app did not start: {exc}") from exc


def run(url: str, users: int, seconds: float, backend: str) -> dict:
    from gradio_client import Client

    questions = _questions()
    latencies: list[float] = []
    errors: list[str] = []
    refused = 0
    lock = threading.Lock()
    stop_at = time.time() + seconds

    def user(seed: int) -> None:
        nonlocal refused
        client = Client(url, verbose=False)
        rng = random.Random(seed)
        while time.time() < stop_at:
            question = rng.choice(questions)
            started = time.perf_counter()
            try:
                result = client.predict(question, "", backend, 5, api_name="/ask")
                ok = isinstance(result, dict) and "error" not in result
                problem = "" if ok else str(result.get("error") if isinstance(result, dict) else result)
            except Exception as exc:  # transport errors count as failures
                ok, problem = False, f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                    refused += bool(result.get("refused"))
                else:
                    errors.append(problem)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.time() - started
    ordered = sorted(latencies)
    return {
        "backend": backend,
        "users": users,
        "seconds": round(wall, 1),
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "refused": refused,
        "latency_p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "latency_p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2)
        if ordered
        else None,
        "throughput_per_min": round(60 * len(latencies) / wall, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--backend", default="extractive")
    parser.add_argument("--url", help="an already running app (127.0.0.1 only)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "load.json")
    args = parser.parse_args()
    process = None
    url = args.url
    if url is None:
        port = free_port()
        process = _start_app(port, args.backend)
        url = f"http://127.0.0.1:{port}/"
    elif not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("load tests run against 127.0.0.1 only")
    try:
        result = run(url, args.users, args.seconds, args.backend)
    finally:
        if process:
            stop(process)
    print(json.dumps(result, indent=1, ensure_ascii=False))
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([*previous, result], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
