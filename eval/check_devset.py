#!/usr/bin/env python3
"""Validate the development question set (eval/devset.jsonl).

Checks, per line:
  * valid JSON object, UTF-8, only known fields, correct types;
  * unique ``id``; ``type`` and ``lang`` in their allowed sets;
  * ``history`` well formed (required, 1-4 turns, for ``followup``);
  * ``evidence`` / ``keywords`` / ``doc`` coherent with the type
    (unanswerable: all empty; factual/position/followup: >= 1 passage;
    synthesis: >= 2 passages; adversarial: either grounded or empty);
  * every evidence passage occurs in the corpus document named by ``doc``
    after normalisation (casefold, collapse whitespace, strip Markdown
    emphasis ``*``/``_``, remove backslash escapes, unify quotes/apostrophes);
  * every keyword occurs in the reference answer (case-insensitive).

Set-level checks (skip with --no-composition): minimum size and minimum
counts per type, per language and per document.

Warnings (do not fail unless --strict): evidence passages outside the
40-300 character guideline, passages that only match after normalisation
(i.e. not byte-exact copies), duplicate questions, history not ending with
an assistant turn.

Prints counts per type / lang / doc and exits with status 1 on any error.
Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DEVSET = HERE / "devset.jsonl"
DEFAULT_CORPUS = HERE.parent / "corpus"

TYPES = ("factual", "position", "synthesis", "unanswerable", "followup", "adversarial")
LANGS = ("fr", "en")
REQUIRED = {
    "id": str,
    "question": str,
    "answer": str,
    "evidence": list,
    "type": str,
    "lang": str,
    "keywords": list,
    "doc": str,
}
OPTIONAL = {"history": list}
ID_RE = re.compile(r"^[a-z]+-\d{2,3}$")

# Set-level composition requirements.
MIN_TOTAL = 90
MIN_PER_TYPE = {"unanswerable": 14, "followup": 9, "adversarial": 7, "factual": 25, "position": 8, "synthesis": 5}
MIN_PER_DOC = 30
MIN_EN_SHARE = 0.10

EVIDENCE_MIN_LEN, EVIDENCE_MAX_LEN = 40, 300

_QUOTES = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2039": '"',
        "\u203a": '"',
    }
)


def normalise(text: str) -> str:
    """Normalisation used to match evidence against the corpus."""
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"\\(.)", r"\1", text)  # backslash escapes: \$ -> $, \_ -> _
    text = text.translate(_QUOTES)  # ’‘“”«» -> ' "
    text = text.replace("*", "").replace("_", "")  # Markdown emphasis
    text = text.casefold()
    text = re.sub(r"\s+", " ", text)  # NBSP, tabs, newlines -> one space
    return text.strip()


def load_corpus(corpus_dir: Path) -> dict[str, str]:
    docs = {}
    for path in sorted(corpus_dir.glob("*.md")):
        docs[path.stem] = path.read_text(encoding="utf-8")
    return docs


def check_item(obj, lineno, docs, norm_docs, errors, warnings):
    where = f"line {lineno}"
    if not isinstance(obj, dict):
        errors.append(f"{where}: not a JSON object")
        return None
    if isinstance(obj.get("id"), str):
        where = f"line {lineno} ({obj['id']})"

    for key, typ in REQUIRED.items():
        if key not in obj:
            errors.append(f"{where}: missing field '{key}'")
        elif not isinstance(obj[key], typ):
            errors.append(f"{where}: field '{key}' must be {typ.__name__}")
    for key in obj:
        if key not in REQUIRED and key not in OPTIONAL:
            errors.append(f"{where}: unknown field '{key}'")
    if "history" in obj and not isinstance(obj["history"], list):
        errors.append(f"{where}: field 'history' must be list")
    if any(not isinstance(obj.get(k), t) for k, t in REQUIRED.items()):
        return None  # further checks need correct types

    qtype, lang, doc = obj["type"], obj["lang"], obj["doc"]
    evidence, keywords = obj["evidence"], obj["keywords"]

    if not ID_RE.match(obj["id"]):
        warnings.append(f"{where}: id does not look like 'prefix-NN'")
    for key in ("question", "answer"):
        if not obj[key].strip():
            errors.append(f"{where}: empty '{key}'")
    if qtype not in TYPES:
        errors.append(f"{where}: type '{qtype}' not in {TYPES}")
    if lang not in LANGS:
        errors.append(f"{where}: lang '{lang}' not in {LANGS}")

    # history
    history = obj.get("history")
    if history is not None:
        if not 1 <= len(history) <= 4:
            errors.append(f"{where}: history must have 1-4 turns (has {len(history)})")
        for i, turn in enumerate(history):
            if (
                not isinstance(turn, dict)
                or set(turn) != {"role", "content"}
                or turn.get("role") not in ("user", "assistant")
                or not isinstance(turn.get("content"), str)
                or not turn["content"].strip()
            ):
                errors.append(f"{where}: history[{i}] must be {{'role': 'user'|'assistant', 'content': non-empty str}}")
        if history and isinstance(history[-1], dict) and history[-1].get("role") != "assistant":
            warnings.append(f"{where}: history does not end with an assistant turn")
    if qtype == "followup" and not history:
        errors.append(f"{where}: followup requires a non-empty history")

    # keywords
    if len(keywords) > 4:
        errors.append(f"{where}: at most 4 keywords")
    for k in keywords:
        if not isinstance(k, str) or not k.strip():
            errors.append(f"{where}: keywords must be non-empty strings")
        elif k.casefold() not in obj["answer"].casefold():
            errors.append(f"{where}: keyword {k!r} not found in the reference answer")

    # type-dependent coherence
    if qtype == "unanswerable":
        if evidence or keywords or doc:
            errors.append(f"{where}: unanswerable must have empty evidence, keywords and doc")
    elif qtype == "adversarial":
        if bool(evidence) != bool(doc):
            errors.append(f"{where}: adversarial: evidence and doc must be both empty or both set")
        if evidence and not keywords:
            errors.append(f"{where}: grounded adversarial item needs 1-4 keywords")
    elif qtype in TYPES:
        minimum = 2 if qtype == "synthesis" else 1
        if len(evidence) < minimum:
            errors.append(f"{where}: {qtype} needs at least {minimum} evidence passage(s)")
        if not keywords:
            errors.append(f"{where}: {qtype} needs 1-4 keywords")
        if not doc:
            errors.append(f"{where}: {qtype} needs a doc id")

    # evidence against corpus
    if doc and doc not in docs:
        errors.append(f"{where}: unknown doc '{doc}' (known: {', '.join(docs)})")
    for i, ev in enumerate(evidence):
        if not isinstance(ev, str) or not ev.strip():
            errors.append(f"{where}: evidence[{i}] must be a non-empty string")
            continue
        if not (EVIDENCE_MIN_LEN <= len(ev) <= EVIDENCE_MAX_LEN):
            warnings.append(f"{where}: evidence[{i}] length {len(ev)} outside {EVIDENCE_MIN_LEN}-{EVIDENCE_MAX_LEN}")
        if doc not in docs:
            continue
        if normalise(ev) not in norm_docs[doc]:
            others = [d for d in docs if d != doc and normalise(ev) in norm_docs[d]]
            hint = f" (found in '{others[0]}' instead)" if others else ""
            errors.append(f"{where}: evidence[{i}] not found in '{doc}'{hint}: {ev[:80]!r}")
        elif ev not in docs[doc]:
            warnings.append(f"{where}: evidence[{i}] matches only after normalisation (not an exact copy)")
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("devset", nargs="?", type=Path, default=DEFAULT_DEVSET)
    ap.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--no-composition", action="store_true", help="skip set-level size/balance requirements")
    ap.add_argument("--strict", action="store_true", help="treat warnings as errors")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not list warnings")
    args = ap.parse_args(argv)

    errors: list[str] = []
    warnings: list[str] = []

    docs = load_corpus(args.corpus_dir)
    if not docs:
        print(f"ERROR: no *.md documents in {args.corpus_dir}", file=sys.stderr)
        return 1
    norm_docs = {d: normalise(t) for d, t in docs.items()}

    try:
        raw = args.devset.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ERROR: cannot read {args.devset} as UTF-8: {exc}", file=sys.stderr)
        return 1

    items = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            errors.append(f"line {lineno}: empty line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: invalid JSON: {exc}")
            continue
        item = check_item(obj, lineno, docs, norm_docs, errors, warnings)
        if item is not None:
            items.append(item)

    # uniqueness
    for key, level in (("id", errors), ("question", warnings)):
        counts = Counter(it[key].strip().casefold() if key == "question" else it[key] for it in items)
        for value, n in counts.items():
            if n > 1:
                level.append(f"duplicate {key} ({n}x): {value[:80]!r}")

    by_type = Counter(it["type"] for it in items)
    by_lang = Counter(it["lang"] for it in items)
    by_doc = Counter(it["doc"] or "(none)" for it in items)
    by_doc_type = Counter((it["doc"] or "(none)", it["type"]) for it in items)
    by_type_lang = Counter((it["type"], it["lang"]) for it in items)

    if not args.no_composition:
        if len(items) < MIN_TOTAL:
            errors.append(f"composition: {len(items)} items < {MIN_TOTAL}")
        for t, n in MIN_PER_TYPE.items():
            if by_type[t] < n:
                errors.append(f"composition: {by_type[t]} '{t}' items < {n}")
        for d in docs:
            if by_doc[d] < MIN_PER_DOC:
                errors.append(f"composition: {by_doc[d]} items on '{d}' < {MIN_PER_DOC}")
        if items and by_lang["en"] / len(items) < MIN_EN_SHARE:
            errors.append(f"composition: English share {by_lang['en'] / len(items):.0%} < {MIN_EN_SHARE:.0%}")

    # report
    n_ev = sum(len(it["evidence"]) for it in items)
    print(f"{args.devset}: {len(items)} items, {n_ev} evidence passages, {len(docs)} corpus documents")
    print("\nBy type:")
    for t in TYPES:
        langs = ", ".join(f"{lg}={by_type_lang[(t, lg)]}" for lg in LANGS)
        print(f"  {t:<13} {by_type[t]:>4}   ({langs})")
    print("\nBy lang:")
    for lang in LANGS:
        share = by_lang[lang] / len(items) if items else 0
        print(f"  {lang:<13} {by_lang[lang]:>4}   ({share:.0%})")
    print("\nBy doc:")
    for d in [*list(docs), "(none)"]:
        detail = ", ".join(f"{t}={by_doc_type[(d, t)]}" for t in TYPES if by_doc_type[(d, t)])
        print(f"  {d:<46} {by_doc[d]:>4}   ({detail})")

    if warnings and not args.quiet:
        print(f"\nWarnings ({len(warnings)}):")
        for w in warnings:
            print(f"  - {w}")
    if args.strict:
        errors.extend(f"[strict] {w}" for w in warnings)
    if errors:
        print(f"\nERRORS ({len(errors)}):")
        for e in errors:
            print(f"  - {e}")
        print("\nFAILED")
        return 1
    print(f"\nOK ({len(warnings)} warning(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
