"""Matching evidence passages to chunk text by normalised text, independent of chunking.

Used by the eval harness, the retrieval benchmark and the tests: case, whitespace,
Markdown emphasis and escapes, and quote/apostrophe variants are ignored.
"""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher

_QUOTES = str.maketrans(
    {"’": "'", "‘": "'", "`": "'", "“": '"', "”": '"', "«": '"', "»": '"', "\u00a0": " ", "\u202f": " "}
)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = re.sub(r"<sup>.*?</sup>", "", text)
    text = re.sub(r"\\(.)", r"\1", text)  # Markdown escapes: \$ → $
    text = re.sub(r"[*_#>|]+", " ", text)  # emphasis, headings, quotes, table bars
    text = re.sub(r"\s+", " ", text)
    return text.casefold().strip()


def evidence_coverage(chunk_text: str, evidence: str) -> float:
    """Share of the evidence found as one contiguous run in the chunk (0–1)."""
    needle, hay = normalize(evidence), normalize(chunk_text)
    if not needle:
        return 0.0
    if needle in hay:
        return 1.0
    match = SequenceMatcher(None, hay, needle, autojunk=False).find_longest_match(0, len(hay), 0, len(needle))
    return match.size / len(needle)


def contains_evidence(chunk_text: str, evidence: str, threshold: float = 0.6) -> bool:
    """True when the chunk holds the evidence (or ≥ ``threshold`` of it, when a chunk boundary cuts it)."""
    return evidence_coverage(chunk_text, evidence) >= threshold
