"""The one atomic writer that the index pointer, model stamps and eval reports share."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.files import write_text_atomic


@pytest.mark.parametrize("durable", [False, True])
def test_the_new_text_replaces_the_old_and_leaves_no_temporary_file(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "CURRENT"
    target.write_text("gen-1", encoding="utf-8")
    write_text_atomic(target, "gen-2 — é", durable=durable)
    assert target.read_text(encoding="utf-8") == "gen-2 — é"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text('{"ok": true}', encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "half written \ud800 never lands")  # a lone surrogate cannot be encoded
    assert target.read_text(encoding="utf-8") == '{"ok": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
