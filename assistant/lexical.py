"""French lexical index: BM25 (bm25s) over Snowball-stemmed, accent-folded tokens.

Dense e5 embeddings miss exact names, figures and acronyms; BM25 catches them. The
analyzer is shared by indexing, querying and the sufficiency check in ``generate``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_FRENCH

from assistant.files import code_version

_EXTRA_STOPWORDS = {
    # interrogatives and question scaffolding carry no evidence
    "combien",
    "pourquoi",
    "lequel",
    "laquelle",
    "lesquels",
    "lesquelles",
    "est-ce",
    "quoi",
    "quid",
    "cite",
    "citez",
    "donne",
    "donnez",
    "indique",
    "indiquez",
    "explique",
    "expliquez",
    "existe",
    "many",
    "much",
    "why",
    "when",
    "where",
    "tell",
    "list",
    "according",
    "a",
    "à",
    "afin",
    "ainsi",
    "alors",
    "après",
    "aussi",
    "autre",
    "autres",
    "avant",
    "avec",
    "being",
    "bien",
    "car",
    "cela",
    "ce",
    "ces",
    "cet",
    "cette",
    "comme",
    "comment",
    "dans",
    "de",
    "des",
    "donc",
    "dont",
    "du",
    "elle",
    "en",
    "encore",
    "entre",
    "est",
    "et",
    "être",
    "faire",
    "fait",
    "font",
    "il",
    "ils",
    "la",
    "le",
    "les",
    "leur",
    "leurs",
    "lors",
    "mais",
    "même",
    "ne",
    "ni",
    "non",
    "nous",
    "on",
    "ou",
    "où",
    "par",
    "pas",
    "peut",
    "peuvent",
    "plus",
    "pour",
    "quand",
    "que",
    "quel",
    "quelle",
    "quelles",
    "quels",
    "qui",
    "sa",
    "sans",
    "se",
    "selon",
    "ses",
    "si",
    "son",
    "sont",
    "sous",
    "sur",
    "tous",
    "tout",
    "toute",
    "toutes",
    "très",
    "un",
    "une",
    "vers",
    "vous",
    "y",
    "d",
    "l",
    "qu",
    "n",
    "s",
    "c",
    "j",
    "m",
    "t",
    # English function words, so English questions still match French key terms
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "are",
    "what",
    "which",
    "who",
    "how",
    "for",
    "by",
    "with",
    "does",
    "do",
    "did",
    "was",
    "were",
    "that",
    "this",
    "it",
    "as",
    "at",
    "from",
    "an",
    "be",
    "about",
}
STOPWORDS = frozenset(unicodedata.normalize("NFC", w) for w in set(STOPWORDS_FRENCH) | _EXTRA_STOPWORDS)
_TOKEN = re.compile(r"[^\W_]+(?:[-.][^\W_]+)*", re.UNICODE)


def fold_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("french")


_INVERSION = re.compile(r"-(?:t-)?(?:il|elle|ils|elles|on|ce|je|tu|nous|vous|en|y)\b")


def raw_tokens(text: str) -> list[str]:
    """Lower-cased word tokens, elisions split (``l'État`` → ``état``), inversions dropped (``a-t-il`` → ``a``)."""
    text = unicodedata.normalize("NFC", text.lower()).replace("’", "'")
    text = _INVERSION.sub("", text)
    return [t for t in _TOKEN.findall(text) if t]


def analyze(text: str) -> list[str]:
    """Tokens for BM25: stopwords removed, French Snowball stem, accents folded."""
    words = [w for w in raw_tokens(text) if w not in STOPWORDS and fold_accents(w) not in STOPWORDS]
    stems = _stemmer().stemWords(words)
    return [fold_accents(s) for s in stems]


WORD = re.compile(r"[^\W\d_][\w-]*", re.UNICODE)  # a word, possibly hyphenated, without digits

ENGLISH_FUNCTION_WORDS = {
    "the",
    "what",
    "which",
    "who",
    "how",
    "does",
    "is",
    "are",
    "of",
    "and",
    "to",
    "in",
    "did",
    "was",
    "why",
    "for",
}
FRENCH_FUNCTION_WORDS = {
    "le",
    "la",
    "les",
    "des",
    "est",
    "quel",
    "quelle",
    "quels",
    "quelles",
    "qui",
    "du",
    "et",
    "en",
    "pour",
    "que",
    "une",
}


def detect_language(text: str) -> str:
    """'en' or 'fr' from function words (the corpus and default are French)."""
    words = raw_tokens(text)
    english = sum(w in ENGLISH_FUNCTION_WORDS for w in words)
    french = sum(w in FRENCH_FUNCTION_WORDS for w in words)
    return "en" if english > french else "fr"


def specific_terms(question: str, lang: str = "fr") -> list[str]:
    """Acronyms (HDS, DiGA, CI-SIS) and, in French, capitalised words inside a sentence (Ségur, Pheal)."""
    terms = []
    for match in WORD.finditer(question):
        start = match.start()
        while start and question[start - 1].isdigit():  # "2IM" is one name, not "IM"
            start -= 1
        word = question[start : match.end()]
        uppers = sum(c.isupper() for c in word)
        if uppers >= 2 and len(word) >= 2:
            terms.append(word)
            continue
        if lang == "fr" and word[0].isupper() and len(word) >= 3:
            before = question[: match.start()].rstrip()
            if before and before[-1] not in '.!?:«"“(' and not before.endswith("'"):
                terms.append(word)
    return list(dict.fromkeys(terms))


def name_stems(text: str) -> set[str]:
    """Stems of the acronyms and capitalised words inside sentences (names, in French or English)."""
    return {stem for term in specific_terms(text, "fr") for stem in analyze(term)}


def lexical_query(text: str) -> str:
    """The words of ``text`` worth a BM25 search: all of a French text; of an English one only
    its names and acronyms, when it has any. Its common words ("health", "digital") match
    nothing but the English fragments of the French corpus, job titles and project names
    (English dev and held-out questions: evidence in the top 5 for 17 of 20 instead of 16, MRR
    0.61 → 0.64). One without names keeps all its words: French cognates ("consultation",
    "innovation") are all BM25 can find for it ("…the consultation's response deadline")."""
    if detect_language(text) != "en":
        return text
    names = name_stems(text)
    kept = " ".join(word for word in text.split() if names.intersection(analyze(word)))
    return kept or text


# The analyzer's identity: a saved index whose tokens another version produced (other stopwords,
# another stemming) no longer matches the queries' tokens, and is rebuilt when it is loaded
ANALYZER_VERSION = code_version(__file__)


class LexicalIndex:
    """BM25 over a fixed list of chunk ids; persisted as a folder."""

    def __init__(self, ids: list[str], retriever: bm25s.BM25, analyzer: str = ANALYZER_VERSION) -> None:
        self.ids = ids
        self.analyzer = analyzer  # ANALYZER_VERSION of the code that tokenized the chunks
        self._retriever = retriever
        self._position = {chunk_id: i for i, chunk_id in enumerate(ids)}

    @classmethod
    def build(cls, ids: list[str], texts: list[str]) -> LexicalIndex:
        retriever = bm25s.BM25(k1=1.2, b=0.75)
        tokens = [analyze(t) or ["∅"] for t in texts]
        retriever.index(tokens, show_progress=False)
        return cls(list(ids), retriever)

    @property
    def is_current(self) -> bool:
        """Whether the chunks were tokenized as queries are now."""
        return self.analyzer == ANALYZER_VERSION

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(folder))
        (folder / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        (folder / "analyzer.txt").write_text(self.analyzer, encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        version = folder / "analyzer.txt"
        analyzer = version.read_text(encoding="utf-8").strip() if version.exists() else ""
        return cls(ids, bm25s.BM25.load(str(folder)), analyzer)

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (chunk id, BM25 score) with a positive score, optionally restricted to ``allowed``."""
        if not self.ids:
            return []
        terms = analyze(query)
        if not terms:
            return []
        scores = np.asarray(self._retriever.get_scores(terms), dtype=np.float64)
        if allowed is not None:
            mask = np.zeros(len(self.ids), dtype=bool)
            for chunk_id in allowed:
                pos = self._position.get(chunk_id)
                if pos is not None:
                    mask[pos] = True
            scores = np.where(mask, scores, 0.0)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[i], float(scores[i])) for i in order if scores[i] > 0]

    def document_frequency(self, term: str) -> float:
        """Share of chunks containing the analysed ``term`` (0 when unknown)."""
        vocab = self._retriever.vocab_dict
        position = vocab.get(term)
        if position is None or not self.ids:
            return 0.0
        indptr = self._retriever.scores["indptr"]
        return float(indptr[position + 1] - indptr[position]) / len(self.ids)
