"""Local helper processes: a free port, a process that must start listening, a Chroma server.

One implementation for the tests, the Chroma-server benchmark and the load test, which
all start a server on a free local port and wait until it accepts connections.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class ServerStartError(RuntimeError):
    """A helper process did not start listening in time (it has been stopped)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_listening(
    command: Sequence[str], port: int, timeout: float, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``command`` and return once it accepts connections on ``port``.

    Raises ``ServerStartError`` (after killing the process) when it exits or stays silent
    for ``timeout`` seconds, so a caller never waits forever on a dead server.
    """
    process = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"{command[0]} exited with code {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    process.wait(timeout=10)
    raise ServerStartError(f"{command[0]} did not listen on port {port} within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def chroma_server(path: Path, timeout: float = 120) -> Iterator[str]:
    """Run ``chroma run --path PATH`` on a free port for the duration of the block; yields its URL."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    command = [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    process = start_listening(command, port, timeout)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
