"""Starting helper servers: a live one is waited for, a dead one is reported, not waited on."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from assistant.servers import ServerStartError, free_port, start_listening, stop


def test_a_server_is_returned_once_it_listens(tmp_path):
    (tmp_path / "ok.txt").write_text("ok", encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    process = start_listening(command, port, timeout=30)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok.txt", timeout=10) as response:
            assert response.read() == b"ok"
    finally:
        stop(process)
    assert process.poll() is not None


def test_a_command_that_exits_is_reported_without_waiting_for_the_timeout():
    with pytest.raises(ServerStartError, match="exited with code 3"):
        start_listening([sys.executable, "-c", "raise SystemExit(3)"], free_port(), timeout=600)
