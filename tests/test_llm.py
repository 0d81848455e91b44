"""The local model's saved prompt-prefix states, and the pipeline reading the prefix at load time
(the real model is exercised in test_e2e_local)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from assistant import chat
from assistant.generate import SYSTEM_PROMPT
from assistant.llm import KeepsPrefix, Warmup, _common_prefix, _read_state, _write_state
from tests.fakes import MockLLM

llama_cpp = pytest.importorskip("llama_cpp")


def _state(tokens: list[int], vocabulary: int = 8) -> object:
    return llama_cpp.LlamaState(
        input_ids=np.asarray(tokens + [0] * 4, dtype=np.intc),
        scores=np.arange(vocabulary, dtype=np.single)[None, :],
        n_tokens=len(tokens),
        llama_state=bytes(range(200)),
        llama_state_size=200,
        seed=7,
    )


def test_common_prefix_is_what_every_variant_starts_with():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 5]]) == [1, 2]
    assert _common_prefix([[1, 2], [1, 2, 3]]) == [1, 2]
    assert _common_prefix([[4, 2], [1, 2]]) == []
    assert _common_prefix([]) == []


def test_a_saved_state_reads_back_for_the_same_tokens_only(tmp_path: Path):
    path = tmp_path / "states" / "prefix-a.npz"
    _write_state(path, _state([5, 6, 7]), [5, 6, 7])
    restored = _read_state(path, [5, 6, 7], n_ctx=16)
    assert restored is not None
    assert restored.n_tokens == 3 and restored.input_ids.shape == (16,)  # Llama writes past n_tokens
    assert restored.input_ids[:3].tolist() == [5, 6, 7] and restored.seed == 7
    assert restored.llama_state == bytes(range(200)) and restored.llama_state_size == 200
    assert restored.scores.shape == (1, 8) and restored.scores[0, 7] == 7
    assert _read_state(path, [5, 6, 8], n_ctx=16) is None  # another prompt: evaluated, not loaded
    assert [p.name for p in path.parent.iterdir()] == ["prefix-a.npz"]  # no temporary file left behind


def test_an_unreadable_state_is_reported_and_ignored(tmp_path: Path, caplog):
    path = tmp_path / "prefix-b.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING):
        assert _read_state(path, [1, 2], n_ctx=8) is None
    assert "illisible" in caplog.text
    assert _read_state(tmp_path / "absent.npz", [1, 2], n_ctx=8) is None


def test_only_the_most_recent_states_are_kept(tmp_path: Path):
    for i in range(6):
        _write_state(tmp_path / f"prefix-{i}.npz", _state([i]), [i])
        past = time.time() - 100 + i  # written in that order, long ago
        os.utime(tmp_path / f"prefix-{i}.npz", (past, past))
    _write_state(tmp_path / "prefix-new.npz", _state([9]), [9])
    kept = sorted(p.name for p in tmp_path.glob("prefix-*.npz"))
    assert kept == ["prefix-3.npz", "prefix-4.npz", "prefix-5.npz", "prefix-new.npz"]


def test_a_state_that_cannot_be_written_costs_only_speed(tmp_path: Path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        _write_state(blocker / "prefix-c.npz", _state([1]), [1])  # parent is a file
    assert "non enregistré" in caplog.text


class PrefixKeepingLLM(MockLLM):
    """A ``MockLLM`` that keeps a prompt prefix (``llm.KeepsPrefix``), like the local model."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[tuple[list[list[dict[str, str]]], Path | None]] = []

    def warm_prefix(self, variants, state_dir=None) -> Warmup:
        self.warmed.append(([list(v) for v in variants], state_dir))
        return Warmup(400, 0.5, "disk")


def test_a_loaded_local_model_reads_the_answer_prompt_prefix_once(corpus_index, monkeypatch):
    backend = PrefixKeepingLLM()
    assert isinstance(backend, KeepsPrefix) and not isinstance(MockLLM(), KeepsPrefix)
    monkeypatch.setattr(chat, "build_llm", lambda settings, name: backend)
    settings = corpus_index.settings.model_copy(update={"backend": "local"})
    assistant = chat.Assistant(settings, corpus_index, chat.HybridRetriever(corpus_index))
    assert assistant.warmup is None
    assert assistant.llm("local") is backend and assistant.llm("local") is backend
    assert len(backend.warmed) == 1 and assistant.warmup == Warmup(400, 0.5, "disk")
    variants, state_dir = backend.warmed[0]
    assert state_dir == settings.prompt_states_dir
    assert len(variants) == 2 and variants[0] != variants[1]
    # the variants are answer prompts: they share the rules and examples, then differ
    assert all(v[0] == {"role": "system", "content": SYSTEM_PROMPT} for v in variants)
    assert variants[0][:-1] == variants[1][:-1] and variants[0][-1]["role"] == "user"


# ---------------------------------------------------------------- the llama.cpp build and the CPU
_ROOT = Path(__file__).resolve().parents[1]
_AVX2_CPU = "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2\n"
_AVX512_CPU = "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni\n"


def _simd(tmp_path: Path, cpuinfo: str, choice: str | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    env = {**os.environ, "CPUINFO": str(tmp_path / "cpuinfo")}
    env.pop("ASSISTANT_LLAMA_SIMD", None)
    if choice is not None:
        env["ASSISTANT_LLAMA_SIMD"] = choice
    return subprocess.run(
        [str(_ROOT / "scripts" / "llama_simd.sh")], env=env, capture_output=True, text=True, check=False
    )


def test_setup_builds_llama_cpp_for_avx512_only_where_the_cpu_has_it(tmp_path: Path):
    portable = _simd(tmp_path, _AVX2_CPU)
    assert portable.returncode == 0
    assert portable.stdout.splitlines() == ["avx2", "-DGGML_NATIVE=OFF"]
    fast = _simd(tmp_path, _AVX512_CPU)
    assert fast.stdout.splitlines()[0] == "avx512"
    assert "-DGGML_AVX512=ON" in fast.stdout and "-DGGML_NATIVE=OFF" in fast.stdout
    # AVX-512 without VNNI (early Skylake-X) keeps the portable build
    assert _simd(tmp_path, _AVX512_CPU.replace(" avx512_vnni", "")).stdout.splitlines()[0] == "avx2"
    # a portable image can be asked for on any CPU; a typo is refused, not guessed
    assert _simd(tmp_path, _AVX512_CPU, "avx2").stdout.splitlines()[0] == "avx2"
    wrong = _simd(tmp_path, _AVX512_CPU, "avx-512")
    assert wrong.returncode == 1 and "auto, avx2 or avx512" in wrong.stderr


def test_a_build_for_an_instruction_set_the_cpu_lacks_is_refused_before_it_crashes(tmp_path: Path):
    from assistant.llm import missing_cpu_features

    avx512_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | FMA = 1 | AVX512 = 1 | AVX512_VNNI = 1 | REPACK = 1 | "
    avx2_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | FMA = 1 | REPACK = 1 | "
    (tmp_path / "avx2").write_text(_AVX2_CPU)
    (tmp_path / "avx512").write_text(_AVX512_CPU)
    assert missing_cpu_features(avx512_build, tmp_path / "avx2") == "AVX512, AVX512_VNNI"
    assert missing_cpu_features(avx512_build, tmp_path / "avx512") == ""
    assert missing_cpu_features(avx2_build, tmp_path / "avx2") == ""
    assert missing_cpu_features(avx512_build, tmp_path / "no-such-file") == ""  # not Linux: no opinion
