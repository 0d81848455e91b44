"""The Gradio web app: a French chat over the corpus, with source cards and a corpus page.

Public surface: ``build_app(assistant, settings)`` returns the ``gr.Blocks``;
``launch(assistant, settings, host, port)`` serves it (what ``assistant serve`` calls).

Design choices, and why:

- **Everything shown comes from the corpus or the user, so everything is escaped.** Answers
  and passages are turned into HTML here (``html.escape``, Markdown markers stripped); the
  only markup is ours: ``[n]`` links to ``#source-<turn>-<n>`` and the source cards.
- **One ``Conversation`` per browser session** (``gr.State``): two users never share a history.
- **The local model answers one question at a time**, through ``ModelQueue``: people waiting
  see their position and an estimated wait, while the extractive backend (and remote LLM
  servers) answer in parallel. Gradio's own queue still bounds the total work.
- **Errors a user can act on** (``UserFacingError``: backend unreachable, model missing,
  invalid question, index busy…) become a short French message in the chat; anything else
  is logged server-side and shown as a generic message — never a stack trace, never a secret.
- **Uploads are untrusted**: size-limited, type-checked by their first bytes, stored under
  ``settings.uploads_dir`` with a sanitised name, then indexed without pruning the corpus.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from assistant.chat import Assistant, Conversation
from assistant.errors import BackendUnavailableError, UserFacingError
from assistant.generate import source_label
from assistant.index import DocumentInfo, SyncReport
from assistant.schema import Answer, Citation, Reading
from assistant.settings import Settings

log = logging.getLogger("assistant.ui")

# --------------------------------------------------------------------------- texts

APP_TITLE = "Assistant Santé numérique"
APP_SUBTITLE = (
    "Posez vos questions sur la stratégie française de santé numérique. "
    "Chaque réponse s'appuie sur les documents officiels et cite ses sources."
)

EXAMPLES_STARTUPS = [
    "Quelles difficultés les start-ups de l'e-santé rencontrent-elles pour accéder au marché ?",
    "Quelles aides au financement existent pour les start-ups de la santé numérique ?",
    "Que disent les documents sur le marquage CE et la réglementation des dispositifs médicaux ?",
]
EXAMPLES_OFFICIALS = [
    "Quelle est la position du groupe de travail sur le remboursement de l'e-santé ?",
    "Quel rôle les pouvoirs publics doivent-ils jouer selon le groupe de travail ?",
    "Comment l'achat public peut-il stimuler l'innovation en santé numérique ?",
]

BACKEND_CHOICES = [
    ("Modèle local — réponse rédigée sur ce serveur", "local"),
    ("Extractif — citations exactes, instantané", "extractive"),
    ("Serveur compatible OpenAI", "openai"),
    ("Serveur Ollama", "ollama"),
]
BACKEND_NAMES = {
    "local": "modèle local",
    "extractive": "mode extractif",
    "openai": "serveur compatible OpenAI",
    "ollama": "serveur Ollama",
}
ANSWER_STYLES = {  # how the answer was made, in words a non-specialist understands
    "local": "rédigée par le modèle local",
    "extractive": "extraits exacts des documents",
    "openai": "rédigée par le serveur de langage",
    "ollama": "rédigée par le serveur Ollama",
}
ALL_DOCUMENTS = ""  # dropdown value meaning "search every document"

DOCUMENT_TYPES = {
    "working-group report": "Rapport de groupe de travail",
    "consultation": "Consultation",
    "report": "Rapport",
    "strategy": "Stratégie",
    "guide": "Guide",
    "law": "Texte officiel",
}
DOCUMENT_KINDS = {"pdf": "PDF", "markdown": "Markdown", "text": "Texte"}

EMPTY_SOURCES_HTML = (
    '<div class="asd-sources-empty">'
    "<p><strong>Sources</strong></p>"
    "<p>Les passages cités apparaîtront ici : titre du document, section, page, "
    "et la phrase citée surlignée. Cliquez sur un numéro [1] dans la réponse pour "
    "afficher sa source.</p></div>"
)

UPLOAD_SUFFIXES = (".pdf", ".md", ".markdown", ".txt")

# --------------------------------------------------------------------------- look

CSS = """
.gradio-container { max-width: 1320px !important; margin: 0 auto !important; }
#asd-header { padding: 18px 22px; border-radius: 14px; margin-bottom: 4px;
  background: linear-gradient(90deg, #000091 0%, #1f3fbf 100%); color: #fff; }
#asd-header h1 { margin: 0; font-size: 1.55rem; font-weight: 700; color: #fff; }
#asd-header p { margin: 6px 0 0; opacity: .92; font-size: .98rem; color: #fff; }
#asd-header .asd-flag { display: inline-block; width: 8px; height: 22px; margin-right: 10px; vertical-align: -3px;
  background: linear-gradient(180deg, #fff 0 50%, #e1000f 50% 100%); border-radius: 2px; }
#asd-welcome { padding: 6px 4px; }
#asd-welcome .asd-welcome-intro { font-size: 1rem; color: var(--body-text-color-subdued); margin: 4px 0 10px; }
.asd-examples { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 14px !important;
  background: var(--background-fill-secondary); }
.asd-examples h3 { margin: 0 0 8px; font-size: 1rem; }
.asd-example-btn { justify-content: flex-start !important; text-align: left !important; white-space: normal !important;
  font-weight: 400 !important; min-height: 44px; }
#asd-chat .message-wrap a.asd-cite, #asd-chat a.asd-cite { display: inline-block; padding: 0 5px; margin: 0 1px;
  border-radius: 6px; background: #e3e3fd; color: #000091 !important; font-weight: 600; font-size: .85em;
  text-decoration: none !important; cursor: pointer; }
#asd-chat a.asd-cite:hover { background: #000091; color: #fff !important; }
.asd-answer { color: var(--body-text-color); }
.asd-answer-meta { margin-top: 8px; font-size: .8rem; color: var(--body-text-color-subdued); }
.asd-interpreted { margin-top: 4px; font-size: .8rem; font-style: italic; color: var(--body-text-color-subdued); }
.asd-refusal { border-left: 4px solid #b34000; background: #fff4ec; color: #5a2100; padding: 10px 12px;
  border-radius: 8px; }
.asd-refusal .asd-refusal-title { font-weight: 700; display: block; margin-bottom: 4px; }
.asd-error { border-left: 4px solid #ce0500; background: #fff0f0; color: #6b0000; padding: 10px 12px; border-radius: 8px; }
.asd-wait { border-left: 4px solid #000091; background: #f0f0ff; color: #000060; padding: 10px 12px; border-radius: 8px; }
.asd-streaming { white-space: pre-wrap; }
.asd-reading { font-size: .85rem; color: var(--body-text-color-subdued); margin-bottom: 6px; }
.asd-reading ul { margin: 2px 0 0 0; padding-left: 1.2em; }
.asd-thinking { color: var(--body-text-color-subdued); font-style: italic; }
.asd-cursor { display: inline-block; width: 7px; height: 1em; background: #000091; vertical-align: -2px;
  animation: asd-blink 1s steps(2) infinite; margin-left: 2px; }
@keyframes asd-blink { 50% { opacity: 0; } }
#asd-sources-col { position: sticky; top: 8px; align-self: flex-start; }
#asd-sources { max-height: 78vh; overflow-y: auto !important; padding-right: 6px; }
.asd-sources-empty { border: 1px dashed var(--border-color-primary); border-radius: 12px; padding: 14px 16px;
  color: var(--body-text-color-subdued); font-size: .92rem; }
.asd-turn-title { font-size: .95rem; font-weight: 700; margin: 4px 0 8px; }
.asd-turn-title .asd-question { font-weight: 400; color: var(--body-text-color-subdued); }
.asd-card { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 14px; margin-bottom: 10px;
  background: var(--background-fill-primary); box-shadow: 0 1px 2px rgba(0,0,0,.04); scroll-margin-top: 12px;
  transition: box-shadow .3s, border-color .3s; }
.asd-card.asd-flash { border-color: #000091; box-shadow: 0 0 0 3px rgba(0,0,145,.25); }
.asd-card-head { display: flex; gap: 8px; align-items: baseline; }
.asd-badge { flex: none; background: #000091; color: #fff; border-radius: 6px; padding: 1px 7px; font-weight: 700;
  font-size: .8rem; }
.asd-card-title { font-weight: 700; font-size: .92rem; line-height: 1.3; }
.asd-card-path { font-size: .8rem; color: var(--body-text-color-subdued); margin: 4px 0 0; }
.asd-card-page { font-size: .8rem; color: var(--body-text-color-subdued); }
.asd-passage { margin: 8px 0 0; padding: 8px 10px; border-left: 3px solid var(--border-color-primary);
  background: var(--background-fill-secondary); border-radius: 0 8px 8px 0; font-size: .86rem; line-height: 1.45;
  white-space: pre-wrap; }
.asd-passage mark { background: #fff3a3; color: inherit; padding: 0 1px; border-radius: 2px; }
.asd-older { margin-top: 14px; border-top: 1px solid var(--border-color-primary); padding-top: 8px; }
.asd-older summary { cursor: pointer; font-size: .9rem; font-weight: 600; margin: 6px 0; }
.asd-other-sources { font-size: .85rem; margin: 4px 0 12px; }
.asd-other-sources summary { cursor: pointer; color: var(--body-text-color-subdued); }
.asd-other-sources li { margin: 3px 0; }
.asd-status-ok { border-left: 4px solid #18753c; background: #eefaf1; color: #0d4020; padding: 10px 12px; border-radius: 8px; }
.asd-status-error { border-left: 4px solid #ce0500; background: #fff0f0; color: #6b0000; padding: 10px 12px;
  border-radius: 8px; }
#asd-corpus-table * { font-family: var(--font) !important; }
.dark .asd-refusal { background: #3a1d0a; color: #ffd9c2; }
.dark .asd-error, .dark .asd-status-error { background: #3b0d0d; color: #ffd6d6; }
.dark .asd-wait { background: #15153d; color: #d6d6ff; }
.dark .asd-status-ok { background: #0e2b18; color: #c9f2d6; }
.dark #asd-chat a.asd-cite { background: #2b2b6b; color: #e3e3fd !important; }
.dark .asd-passage mark { background: #6b5d00; }
#asd-upload-guard { position: fixed; left: 50%; bottom: 24px; transform: translateX(-50%); z-index: 1000;
  max-width: 640px; box-shadow: 0 4px 16px rgba(0,0,0,.18); }
#asd-footer { text-align: center; font-size: .8rem; color: var(--body-text-color-subdued); margin-top: 6px; }
"""

# Citation links live in the chat, their cards in the sources panel: a click scrolls the
# card into view (inside the panel), opens it if it belongs to an older, folded turn, and
# flashes it. Capturing the click also stops the chat from opening the link in a new tab.
HEAD_JS = """
<script>
document.addEventListener('click', function (event) {
  const link = event.target.closest && event.target.closest('a[href^="#source-"]');
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  const card = document.getElementById(link.getAttribute('href').slice(1));
  if (!card) return;
  const folded = card.closest('details');
  if (folded) folded.open = true;
  card.scrollIntoView({behavior: 'smooth', block: 'nearest'});
  card.classList.add('asd-flash');
  setTimeout(function () { card.classList.remove('asd-flash'); }, 1800);
}, true);

// Files over the size limit are refused before they are sent, with a French message
// (the server enforces the same limit, but its own message is in English).
function asdTooBig(files) {
  const max = (window.ASD_MAX_UPLOAD_MB || 50) * 1024 * 1024;
  return Array.from(files || []).find(function (file) { return file.size > max; });
}
function asdRefuse(event, file) {
  event.preventDefault();
  event.stopImmediatePropagation();
  if (event.target && event.target.type === 'file') event.target.value = '';
  // a toast of our own, outside the components Gradio re-renders
  let toast = document.getElementById('asd-upload-guard');
  if (!toast) {
    toast = document.createElement('div');
    toast.id = 'asd-upload-guard';
    toast.className = 'asd-status-error';
    toast.setAttribute('role', 'alert');
    document.body.appendChild(toast);
  }
  toast.textContent = '« ' + file.name + ' » est trop volumineux (' + (file.size / 1048576).toFixed(1).replace('.', ',')
    + ' Mo ; maximum ' + window.ASD_MAX_UPLOAD_MB + ' Mo). Choisissez un fichier plus petit.';
  clearTimeout(window.asdGuardTimer);
  window.asdGuardTimer = setTimeout(function () { toast.remove(); }, 10000);
}
['change', 'input'].forEach(function (kind) {
  document.addEventListener(kind, function (event) {
    if (!event.target.matches || !event.target.matches('#asd-upload input[type=file]')) return;
    const file = asdTooBig(event.target.files);
    if (file) asdRefuse(event, file);
  }, true);
});
document.addEventListener('drop', function (event) {
  if (!event.target.closest || !event.target.closest('#asd-upload')) return;
  const file = asdTooBig(event.dataTransfer && event.dataTransfer.files);
  if (file) asdRefuse(event, file);
}, true);
</script>
"""

COPY_JS = """
(text) => {
  if (text && navigator.clipboard) { navigator.clipboard.writeText(text).catch(() => {}); }
  return text;
}
"""


def _theme() -> gr.themes.Base:
    """A sober blue theme (French public-service palette) with system fonts: works offline."""
    return gr.themes.Soft(
        primary_hue=gr.themes.Color(
            c50="#f0f0ff",
            c100="#e3e3fd",
            c200="#cacafb",
            c300="#a5a5f6",
            c400="#7b7bef",
            c500="#3a3ae8",
            c600="#000091",
            c700="#00007a",
            c800="#000066",
            c900="#000052",
            c950="#00003d",
        ),
        neutral_hue="slate",
        font=["Marianne", "Arial", "ui-sans-serif", "system-ui", "sans-serif"],
    ).set(button_primary_background_fill="#000091", button_primary_background_fill_hover="#1212ff")


# --------------------------------------------------------------------------- rendering (pure functions)

_CITATION = re.compile(r"\[(\d{1,3})\]")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`)")


def plain_text(text: str) -> str:
    """Corpus text as a reader sees it: Markdown links/emphasis/HTML tags removed, then escaped."""
    text = _MD_LINK.sub(r"\1", text)
    text = re.sub(r"<sup>[^<]{0,12}</sup>", "", text)  # footnote calls
    text = re.sub(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,80})?/?>", "", text)
    text = _MD_EMPHASIS.sub("", text)
    text = re.sub(r"^\s{0,3}#{1,6}\s+", "", text, flags=re.MULTILINE)
    text = re.sub(r"^([ \t]*)[-+*][ \t]+", "\\1• ", text, flags=re.MULTILINE)
    return html.escape(text, quote=True)


def card_id(turn: int, n: int) -> str:
    """Anchor of the card of source ``n`` in the answer to question number ``turn``."""
    return f"source-{turn}-{n}"


def link_citations(text: str, turn: int, known: set[int]) -> str:
    """Answer text as safe HTML where each known ``[n]`` is a link to its card."""
    parts: list[str] = []
    last = 0
    for match in _CITATION.finditer(text):
        parts.append(plain_text(text[last : match.start()]))
        n = int(match.group(1))
        if n in known:
            parts.append(f'<a class="asd-cite" href="#{card_id(turn, n)}" title="Voir la source {n}">[{n}]</a>')
        else:
            parts.append(html.escape(match.group(0)))
        last = match.end()
    parts.append(plain_text(text[last:]))
    return "".join(parts).replace("\n", "<br>")


def answer_html(answer: Answer, turn: int) -> str:
    """The chat message for a final answer: linked citations, or the refusal style."""
    if answer.refused:  # with citations, the passage nearest the question, shown but not vouched for
        title = (
            "Pas de réponse vérifiable dans les documents"
            if answer.citations
            else "Les documents ne permettent pas de répondre à cette question"
        )
        cited = {c.n for c in answer.citations}
        body = link_citations(answer.text, turn, cited) if cited else plain_text(answer.text)
        return (
            f'<div class="asd-refusal"><span class="asd-refusal-title">{title}</span>'
            f"{body}{interpreted_html(answer)}</div>"
        )
    cited = {c.n for c in answer.citations} or {s.n for s in answer.sources}
    count = len(answer.citations)
    meta = f"{count} source{'s' if count > 1 else ''} citée{'s' if count > 1 else ''}" if count else "Sources"
    seconds = f"{answer.timings.total:.1f}".replace(".", ",")
    meta += f" · {ANSWER_STYLES.get(answer.backend, answer.backend)} · {seconds} s"
    if answer.quoted_fallback:
        meta += " · extraits cités tels quels (la réponse rédigée n'a pas pu être vérifiée)"
    return (
        f'<div class="asd-answer">{link_citations(answer.text, turn, cited)}'
        f'<div class="asd-answer-meta">{html.escape(meta)}</div>{interpreted_html(answer)}</div>'
    )


def interpreted_html(answer: Answer) -> str:
    """The question as answered, when it differs from the words typed (a follow-up's "la seconde"
    replaced by the item it points at, instructions to the assistant left out)."""
    if not answer.interpreted_question:
        return ""
    return f'<div class="asd-interpreted">Question comprise : {html.escape(answer.interpreted_question)}</div>'


def reading_html(reading: Reading | None) -> str:
    """The passages the model is reading, shown while it reads them (~10 s on 2 cores): which
    documents and sections the answer will draw on, before any token arrives."""
    if reading is None or not reading.sources:
        return ""
    items = "".join(
        f"<li>[{c.n}] {html.escape(_shorten(c.chunk.title, 70))}"
        f"{' — ' + html.escape(_shorten(source_label(c.chunk, name_bare_headings=True), 120)) if c.chunk.section else ''}"
        f"{f', p. {c.chunk.page}' if c.chunk.page is not None else ''}</li>"
        for c in reading.sources
    )
    understood = (
        f'<div class="asd-interpreted">Question comprise : {html.escape(reading.interpreted_question)}</div>'
        if reading.interpreted_question
        else ""
    )
    count = len(reading.sources)
    return (
        f'<div class="asd-reading">{understood}Passage{"s" if count > 1 else ""} lu{"s" if count > 1 else ""} '
        f"pour répondre :<ul>{items}</ul></div>"
    )


def streaming_html(text: str, reading: Reading | None = None) -> str:
    """Tokens as they arrive (raw model output, escaped), with a blinking cursor, under the
    passages being read once they are chosen."""
    if not text.strip():  # the model is still reading the passages: say so rather than show a void
        waiting = "Lecture des passages et rédaction de la réponse…" if reading else "Recherche dans les documents…"
        text_html = f'<span class="asd-thinking">{waiting}</span>'
    else:
        text_html = f'<span class="asd-draft">{plain_text(text)}</span>'
    return f'{reading_html(reading)}<div class="asd-streaming">{text_html}<span class="asd-cursor"></span></div>'


def notice_html(message: str, kind: str = "wait") -> str:
    """A waiting / error notice in the chat (``kind``: wait | error)."""
    return f'<div class="asd-{kind}">{html.escape(message)}</div>'


def locate_snippet(snippet: str, text: str) -> tuple[int, int] | None:
    """Where the cited snippet sits in the passage, ignoring whitespace and Markdown markers."""
    snippet = snippet.strip()
    if not snippet:
        return None
    exact = text.find(snippet)
    if exact >= 0:
        return exact, exact + len(snippet)
    words = re.findall(r"\w+", snippet)
    if not words:
        return None
    match = re.search(r"[\W_]*".join(re.escape(w) for w in words), text)
    return (match.start(), match.end()) if match else None


def passage_html(citation: Citation) -> str:
    """The supporting passage with the cited sentence highlighted."""
    text = citation.chunk.text.strip()
    span = locate_snippet(citation.snippet, text)
    if span is None:
        body = plain_text(text)
        if citation.snippet:
            body = f"<mark>{plain_text(citation.snippet)}</mark><br><br>{body}"
        return body
    start, end = span
    return f"{plain_text(text[:start])}<mark>{plain_text(text[start:end])}</mark>{plain_text(text[end:])}"


def source_card_html(citation: Citation, turn: int) -> str:
    """One source card: number, document title, section path, page, highlighted passage."""
    chunk = citation.chunk
    section = " › ".join(plain_text(part) for part in chunk.section.split(" > ") if part.strip())
    page = ""
    if chunk.page is not None:
        pages = f"p. {chunk.page}" if chunk.page_end in (None, chunk.page) else f"p. {chunk.page}–{chunk.page_end}"
        page = f'<div class="asd-card-page">{pages}</div>'
    return (
        f'<article class="asd-card" id="{card_id(turn, citation.n)}">'
        f'<div class="asd-card-head"><span class="asd-badge">{citation.n}</span>'
        f'<span class="asd-card-title">{plain_text(chunk.title)}</span></div>'
        + (f'<div class="asd-card-path">{section}</div>' if section else "")
        + page
        + f'<div class="asd-passage">{passage_html(citation)}</div></article>'
    )


def turn_sources_html(answer: Answer, turn: int) -> str:
    """Cards of the cited sources of one answer, plus the other passages that were read."""
    if answer.refused and not answer.citations:
        return '<p class="asd-card-path">Aucun passage des documents ne répond à cette question.</p>'
    cited = answer.citations or answer.sources
    cards = "".join(source_card_html(c, turn) for c in cited)
    if answer.refused:
        cards = '<p class="asd-card-path">Le passage le plus proche, qui ne répond peut-être pas :</p>' + cards
    cited_ids = {c.n for c in cited}
    others = [s for s in answer.sources if s.n not in cited_ids]
    if others:
        items = "".join(f"<li><strong>[{s.n}]</strong> {plain_text(s.chunk.location)}</li>" for s in others)
        cards += (
            f'<details class="asd-other-sources"><summary>Autres passages consultés ({len(others)})</summary>'
            f"<ul>{items}</ul></details>"
        )
    return cards


def sources_panel_html(conversation: Conversation) -> str:
    """All turns' sources, newest first; older turns folded (their cards keep their anchors)."""
    answers = conversation.answers
    if not answers:
        return EMPTY_SOURCES_HTML
    parts: list[str] = []
    for turn in range(len(answers), 0, -1):
        answer = answers[turn - 1]
        cards = turn_sources_html(answer, turn)
        if turn == len(answers):
            parts.append(
                f'<section class="asd-turn"><div class="asd-turn-title">Sources de la réponse {turn} '
                f'<span class="asd-question">— « {plain_text(_shorten(answer.question, 90))} »</span></div>'
                f"{cards}</section>"
            )
        else:
            parts.append(
                f'<details class="asd-older"><summary>Sources de la question {turn} : '
                f"« {plain_text(_shorten(answer.question, 70))} »</summary>{cards}</details>"
            )
    return "".join(parts)


def answer_markdown(answer: Answer | None) -> str:
    """The last answer and its sources as Markdown, for copying into a note or an e-mail."""
    if answer is None:
        return ""
    lines = [f"**Question :** {answer.question}", "", f"**Réponse :** {answer.text}"]
    cited = answer.citations or ([] if answer.refused else answer.sources)
    if cited:
        lines += ["", "**Sources :**", ""]
        for c in cited:
            lines.append(f"[{c.n}] {c.chunk.location}")
            if c.snippet:
                quote = re.sub(r"\s+", " ", c.snippet).strip()
                lines.append(f"> « {quote} »")
            lines.append("")
    lines.append("_Réponse produite par l'Assistant Santé numérique à partir des documents indexés._")
    return "\n".join(lines).strip() + "\n"


def _shorten(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --------------------------------------------------------------------------- corpus page

CORPUS_HEADERS = ["Titre", "Date", "Type", "Format", "Passages"]


def _french_date(value: str) -> str:
    match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", value or "")
    return f"{match.group(3)}/{match.group(2)}/{match.group(1)}" if match else (value or "—")


def corpus_rows(documents: list[DocumentInfo]) -> list[list[Any]]:
    """One table row per indexed document: title, date, type, format, chunk count."""
    rows = []
    for doc in documents:
        kind = DOCUMENT_KINDS.get(doc.kind, doc.kind)
        doc_type = doc.metadata.get("type", "")
        rows.append(
            [
                doc.title,
                _french_date(doc.metadata.get("date", "")),
                DOCUMENT_TYPES.get(doc_type, doc_type) or "Document ajouté",
                kind,
                doc.chunks,
            ]
        )
    return rows


def document_choices(documents: list[DocumentInfo]) -> list[tuple[str, str]]:
    """Dropdown entries: every document, or one of them (short title when there is one)."""
    return [("Tous les documents", ALL_DOCUMENTS)] + [
        (doc.metadata.get("short_title") or doc.title, doc.doc_id) for doc in documents
    ]


class UploadRejected(ValueError):
    """An uploaded file refused before indexing (too big, wrong type, unreadable)."""


def sanitize_filename(name: str) -> str:
    """A safe file name: no directories, ASCII letters/digits/``._-`` only, allowed suffix kept."""
    base = Path(str(name).replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:80] or "document"
    suffix = suffix.lower()
    if f".{suffix}" not in UPLOAD_SUFFIXES:
        raise UploadRejected(
            f"« {_shorten(base, 80)} » : type de fichier non pris en charge. Formats acceptés : PDF, Markdown (.md), texte (.txt)."
        )
    return f"{stem}.{suffix}"


def check_upload(path: Path, original_name: str, max_mb: int) -> None:
    """Refuse a file that is too large or whose content does not match its extension."""
    size = path.stat().st_size
    if size == 0:
        raise UploadRejected(f"« {original_name} » est vide.")
    if size > max_mb * 1024 * 1024:
        raise UploadRejected(
            f"« {original_name} » est trop volumineux ({size / 1024 / 1024:.1f} Mo ; maximum {max_mb} Mo)."
        )
    with path.open("rb") as fh:
        head = fh.read(2048)
    if original_name.lower().endswith(".pdf"):
        if not head.lstrip().startswith(b"%PDF"):
            raise UploadRejected(f"« {original_name} » n'est pas un vrai PDF (en-tête %PDF absent).")
        return
    data = path.read_bytes()
    if b"\x00" in data:
        raise UploadRejected(f"« {original_name} » est un fichier binaire, pas du texte.")
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadRejected(
            f"« {original_name} » n'est pas encodé en UTF-8 (octet invalide à la position {exc.start}). "
            "Enregistrez-le en UTF-8 puis réessayez."
        ) from exc


@dataclass
class StoredUpload:
    """An upload placed in ``uploads_dir``; ``rollback`` puts back what was there before."""

    path: Path
    backup: Path | None
    committed: bool = False

    def commit(self) -> None:
        if self.backup is not None:
            self.backup.unlink(missing_ok=True)
        self.committed = True

    def rollback(self) -> None:
        """A file that could not be indexed must not stay (nor replace a good earlier version)."""
        if self.backup is not None:
            os.replace(self.backup, self.path)
        else:
            self.path.unlink(missing_ok=True)


def store_upload(source: Path, original_name: str, settings: Settings, taken_ids: dict[str, str]) -> StoredUpload:
    """Copy an accepted upload under ``uploads_dir`` (atomic; never outside; never over a corpus file).

    ``taken_ids`` maps indexed doc ids to their paths: an upload named like a corpus
    document gets a suffix instead of replacing it, while re-uploading an earlier upload
    updates it (the previous version is kept aside until the new one is indexed).
    """
    from assistant.ingest import doc_id_for

    uploads = settings.uploads_dir.resolve()
    uploads.mkdir(parents=True, exist_ok=True)
    name = sanitize_filename(original_name)
    target = uploads / name
    counter = 2
    while True:
        owner = taken_ids.get(doc_id_for(target))
        if owner is None or Path(owner).resolve().parent == uploads:
            break
        stem, suffix = name.rsplit(".", 1)
        target = uploads / f"{stem}-{counter}.{suffix}"
        counter += 1
    if target.resolve().parent != uploads:  # belt and braces: sanitize_filename already forbids it
        raise UploadRejected("Nom de fichier refusé.")
    partial = uploads / f".{target.name}.part"  # hidden names are skipped by ingest discovery
    shutil.copyfile(source, partial)
    backup = None
    if target.exists():
        backup = uploads / f".{target.name}.previous"
        os.replace(target, backup)
    os.replace(partial, target)
    return StoredUpload(target, backup)


def sync_failure_message(report: SyncReport) -> str:
    """The reasons the index gave for files it could not read, in one French sentence each."""
    return " ".join(f"« {f.path.name} » n'a pas pu être lu : {f.reason}." for f in report.failed)


# --------------------------------------------------------------------------- the local model's queue


class ModelQueue:
    """First come, first served access to a model that answers one question at a time.

    Unlike a bare lock, it knows each waiter's position, so the page can say
    "vous êtes n° 2" with an estimated wait (from the recent answer durations).
    """

    def __init__(self, typical_seconds: float = 20.0) -> None:
        self._cond = threading.Condition()
        self._waiting: list[int] = []
        self._next_ticket = 0
        self.typical_seconds = typical_seconds

    def join(self) -> int:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._waiting.append(ticket)
            return ticket

    def position(self, ticket: int) -> int:
        """0 when it is this ticket's turn, else how many people are ahead."""
        with self._cond:
            return self._waiting.index(ticket) if ticket in self._waiting else 0

    def wait(self, ticket: int, timeout: float) -> int:
        """Block until the position changes or ``timeout`` passes; return the position."""
        with self._cond:
            before = self._waiting.index(ticket)
            if before:
                self._cond.wait_for(lambda: self._waiting.index(ticket) != before, timeout)
            return self._waiting.index(ticket)

    def leave(self, ticket: int, seconds: float | None = None) -> None:
        with self._cond:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            if seconds:
                self.typical_seconds = 0.7 * self.typical_seconds + 0.3 * seconds
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)


# --------------------------------------------------------------------------- handlers


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def _redact(message: str, settings: Settings) -> str:
    """Never echo a secret, even if a client library put it in an error message."""
    if settings.llm_api_key is not None:
        secret = settings.llm_api_key.get_secret_value()
        if secret:
            message = message.replace(secret, "***")
    return message


def friendly_error(exc: BaseException, settings: Settings) -> str:
    """A French sentence for the user; the traceback stays in the server log."""
    if isinstance(exc, BackendUnavailableError):
        return _redact(
            f"Le moteur de réponse choisi est indisponible pour le moment. {exc} "
            "Vous pouvez choisir « Extractif » dans les options avancées, ou réessayer plus tard.",
            settings,
        )
    if isinstance(exc, UserFacingError):
        return _redact(str(exc), settings)
    log.exception("Erreur inattendue dans l'application web", exc_info=exc)
    return "Une erreur inattendue est survenue. Réessayez ; si elle persiste, prévenez l'administrateur."


@dataclass
class ChatOptions:
    doc_id: str | None
    backend: str
    k: int


class WebApp:
    """The handlers behind the page; one instance per server, state per browser session."""

    #: backends that run on this machine's CPU and therefore answer one at a time
    SERIAL_BACKENDS = frozenset({"local"})

    def __init__(self, assistant: Assistant, settings: Settings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.model_queue = ModelQueue()
        self._ready_backends: set[str] = {"extractive"}
        self._ready_lock = threading.Lock()

    # ---------------------------------------------------------------- models
    def warm_up(self, backend: str) -> None:
        """Load an LLM backend, and its prompt prefix, ahead of the first question (run in a background thread)."""
        try:
            self.assistant.llm(backend)
        except UserFacingError as exc:
            log.warning("Backend %s indisponible au démarrage : %s", backend, _redact(str(exc), self.settings))
            return
        with self._ready_lock:
            self._ready_backends.add(backend)

    def is_ready(self, backend: str) -> bool:
        with self._ready_lock:
            return backend in self._ready_backends

    # ---------------------------------------------------------------- chat
    def take_question(self, question: str, history: list[dict[str, Any]]) -> tuple[Any, ...]:
        """Show the question at once and lock the input while the answer is produced."""
        question = (question or "").strip()
        if not question:
            return gr.skip(), gr.skip(), "", gr.skip(), gr.skip(), gr.skip()
        history = [*history, {"role": "user", "content": html.escape(question)}]
        history.append({"role": "assistant", "content": streaming_html("")})
        return (
            gr.update(value="", interactive=False),
            gr.update(value=history, visible=True),
            question,
            gr.update(visible=False),
            gr.update(interactive=False),
            gr.update(interactive=False),
        )

    def answer(
        self,
        question: str,
        history: list[dict[str, Any]],
        conversation: Conversation,
        doc_id: str,
        backend: str,
        k: float,
    ) -> Iterator[tuple[list[dict[str, Any]], str, str, Conversation]]:
        """Stream the answer into the last chat message, then show its cards and Markdown."""
        if not question:
            yield history, gr.skip(), gr.skip(), conversation
            return
        options = self._options(doc_id, backend, k)
        turn = len(conversation.answers) + 1
        history = list(history or [])
        if not history or _role(history[-1]) != "assistant":  # API callers may send the bare history
            history.append({"role": "assistant", "content": ""})

        def show(content: str) -> list[dict[str, Any]]:
            history[-1] = {"role": "assistant", "content": content}
            return history

        try:
            for content in self._produce(question, conversation, options):
                yield show(content), gr.skip(), gr.skip(), conversation
        except Exception as exc:  # every failure ends as a message, never a traceback
            yield show(notice_html(friendly_error(exc, self.settings), "error")), gr.skip(), gr.skip(), conversation
            return
        last = conversation.answers[-1] if len(conversation.answers) == turn else None
        if last is not None:
            yield (
                show(answer_html(last, turn)),
                sources_panel_html(conversation),
                answer_markdown(last),
                conversation,
            )

    def ask_json(self, question: str, doc_id: str = "", backend: str = "", k: int = 0) -> dict[str, Any]:
        """Stateless JSON endpoint (``/ask``) for scripts and load tests: one question, one answer.

        Same path as the page (model loading, the local model's queue), but no history; a
        failure comes back as ``{"error": "<message en français>"}``, never a traceback.
        """
        conversation = Conversation()
        try:
            for _ in self._produce(question, conversation, self._options(doc_id, backend, k)):
                pass
        except Exception as exc:
            return {"error": friendly_error(exc, self.settings)}
        return conversation.answers[-1].to_dict()

    def _options(self, doc_id: str | None, backend: str | None, k: float | None) -> ChatOptions:
        """Clean the page's (or an API caller's) choices; fall back to the settings."""
        backend = backend if backend in BACKEND_NAMES else self.settings.backend
        k = max(1, min(20, int(k or self.settings.top_k)))
        return ChatOptions(doc_id or None, backend, k)

    def _produce(self, question: str, conversation: Conversation, options: ChatOptions) -> Iterator[str]:
        """Chat-message contents, in order: loading/queue notices, tokens, nothing at the end."""
        if not self.is_ready(options.backend):
            yield notice_html(
                f"Préparation du {BACKEND_NAMES.get(options.backend, options.backend)}… "
                "La première réponse peut prendre jusqu'à une minute.",
                "wait",
            )
            self.assistant.llm(options.backend)  # loads once; raises BackendUnavailableError
            with self._ready_lock:
                self._ready_backends.add(options.backend)
        if options.backend not in self.SERIAL_BACKENDS:
            yield from self._stream(question, conversation, options)
            return
        ticket = self.model_queue.join()
        started = None
        try:
            while (position := self.model_queue.wait(ticket, timeout=1.0)) > 0:
                eta = round(position * self.model_queue.typical_seconds)
                yield notice_html(
                    "Le modèle local répond à une autre question. "
                    f"Vous êtes n° {position + 1} dans la file d'attente (environ {eta} s).",
                    "wait",
                )
            started = time.perf_counter()
            yield from self._stream(question, conversation, options)
        finally:
            self.model_queue.leave(ticket, None if started is None else time.perf_counter() - started)

    def _stream(self, question: str, conversation: Conversation, options: ChatOptions) -> Iterator[str]:
        yield streaming_html("")
        text = ""
        reading: Reading | None = None
        for event in self.assistant.stream(
            question, conversation, doc_id=options.doc_id, backend=options.backend, k=options.k
        ):
            if isinstance(event, Reading):
                reading = event
                yield streaming_html(text, reading)
            elif isinstance(event, str):
                text += event
                yield streaming_html(text, reading)

    def unlock(self) -> tuple[Any, Any, Any]:
        return gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=True)

    def new_conversation(self) -> tuple[Any, ...]:
        """A fresh history for this browser session only."""
        return (
            gr.update(value=[], visible=False),
            Conversation(),
            EMPTY_SOURCES_HTML,
            "",
            gr.update(visible=True),
            gr.update(value="", interactive=True),
            gr.update(interactive=True),
            gr.update(interactive=True),
        )

    # ---------------------------------------------------------------- corpus
    def corpus_view(self) -> tuple[list[list[Any]], Any, str]:
        """Table of documents, filter choices and a one-line summary (on page load and after upload)."""
        documents = self.assistant.index.documents()
        chunks = sum(d.chunks for d in documents)
        summary = f"**{len(documents)} documents** indexés, **{chunks} passages** interrogeables."
        return corpus_rows(documents), gr.update(choices=document_choices(documents)), summary

    def upload(self, file_path: str | None, progress: gr.Progress | None = None) -> tuple[Any, ...]:
        """Check, store and index one uploaded file; report progress and a clear outcome."""
        progress = progress or (lambda *a, **kw: None)
        if not file_path:
            return (self._status("Choisissez d'abord un fichier PDF, Markdown ou texte.", ok=False), *self._unchanged())
        source = Path(file_path)
        original = source.name
        stored: StoredUpload | None = None
        try:
            progress(0.02, desc="Vérification du fichier")
            check_upload(source, original, self.settings.max_upload_mb)
            taken = {d.doc_id: d.path for d in self.assistant.index.documents()}
            stored = store_upload(source, original, self.settings, taken)
            report = self.assistant.index.sync([stored.path], prune=False, progress=self._progress_callback(progress))
            if report.failed:
                stored.rollback()
                return (self._status(sync_failure_message(report), ok=False), *self._unchanged())
            stored.commit()
            progress(0.98, desc="Mise à jour de la recherche")
            self.assistant.refresh()
        except UploadRejected as exc:
            return (self._status(str(exc), ok=False), *self._unchanged())
        except Exception as exc:
            if stored is not None and not stored.committed:
                stored.rollback()
            return (self._status(friendly_error(exc, self.settings), ok=False), *self._unchanged())
        target = stored.path
        doc_id = (report.new_files or report.updated_files or report.unchanged_files or [""])[0]
        info = next((d for d in self.assistant.index.documents() if d.doc_id == doc_id), None)
        title = info.title if info else target.name
        verb = "déjà à jour" if report.unchanged_files and not (report.new_files or report.updated_files) else "ajouté"
        chunks = info.chunks if info else report.chunks
        message = (
            f"« {title} » {verb} : {chunks} passage{'s' if chunks > 1 else ''} indexé{'s' if chunks > 1 else ''}. "
            "Vous pouvez maintenant l'interroger dans l'onglet « Poser une question »."
        )
        rows, choices, summary = self.corpus_view()
        return self._status(message, ok=True), rows, choices, summary, None

    @staticmethod
    def _progress_callback(progress: Callable[..., Any]) -> Callable[[str, int, int], None]:
        """Map the index's (stage, done, total) reports onto the page's progress bar."""
        stages = {"lecture": ("Lecture du document", 0.05, 0.35), "embeddings": ("Indexation des passages", 0.35, 0.95)}

        def report(stage: str, done: int, total: int) -> None:
            label, low, high = stages.get(stage, (stage, 0.0, 1.0))
            fraction = low + (high - low) * (done / total if total else 1.0)
            progress(fraction, desc=f"{label} ({done}/{total})" if total else label)

        return report

    @staticmethod
    def _status(message: str, ok: bool) -> str:
        kind = "ok" if ok else "error"
        return f'<div class="asd-status-{kind}">{html.escape(message)}</div>'

    @staticmethod
    def _unchanged() -> tuple[Any, ...]:
        return gr.skip(), gr.skip(), gr.skip(), None


# --------------------------------------------------------------------------- layout


def build_app(assistant: Assistant, settings: Settings) -> gr.Blocks:
    """The page: a "Poser une question" tab (chat + sources) and a "Corpus" tab."""
    app = WebApp(assistant, settings)
    with gr.Blocks(title=APP_TITLE, analytics_enabled=False) as demo:
        demo.web_app = app  # type: ignore[attr-defined]  # for launch() and tests
        conversation = gr.State(Conversation())
        pending = gr.State("")
        gr.HTML(
            f'<div id="asd-header"><h1><span class="asd-flag"></span>{APP_TITLE}</h1><p>{APP_SUBTITLE}</p></div>',
            js_on_load=None,
        )
        with gr.Tabs():
            with gr.Tab("Poser une question", id="chat"), gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=420):
                    chat = _chat_panel(settings, document_choices(assistant.index.documents()))
                with gr.Column(scale=2, min_width=320, elem_id="asd-sources-col"):
                    sources = gr.HTML(EMPTY_SOURCES_HTML, elem_id="asd-sources", js_on_load=None)
            with gr.Tab("Corpus", id="corpus"):
                corpus = _corpus_panel(settings)
        gr.HTML(
            '<div id="asd-footer">Les réponses reprennent les documents indexés ; vérifiez toujours les sources '
            "citées avant de les utiliser.</div>",
            js_on_load=None,
        )
        _wire_chat(app, demo, chat, sources, conversation, pending)
        gr.api(app.ask_json, api_name="ask", concurrency_id="answer", concurrency_limit=_answer_concurrency())
        _wire_corpus(app, demo, corpus, chat)
    return demo


@dataclass
class _ChatWidgets:
    welcome: gr.Column
    examples: list[gr.Button]
    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    new: gr.Button
    copy: gr.Button
    markdown: gr.Textbox
    document: gr.Dropdown
    backend: gr.Radio
    k: gr.Slider


@dataclass
class _CorpusWidgets:
    summary: gr.Markdown
    table: gr.Dataframe
    file: gr.File
    add: gr.Button
    status: gr.HTML


def _chat_panel(settings: Settings, documents: list[tuple[str, str]]) -> _ChatWidgets:
    """Filters, welcome screen with example questions, chat, input and actions."""
    document = gr.Dropdown(
        choices=documents,
        value=ALL_DOCUMENTS,
        label="Documents interrogés",
        elem_id="asd-document",
        interactive=True,
    )
    with gr.Column(visible=True, elem_id="asd-welcome") as welcome:
        gr.HTML(
            '<p class="asd-welcome-intro">Exemples de questions — cliquez pour essayer, ou écrivez la vôtre ci-dessous.</p>',
            js_on_load=None,
        )
        examples: list[gr.Button] = []
        with gr.Row(equal_height=True):
            for heading, questions in (
                ("Vous créez ou dirigez une start-up", EXAMPLES_STARTUPS),
                ("Vous êtes un acteur public", EXAMPLES_OFFICIALS),
            ):
                with gr.Column(elem_classes="asd-examples"):
                    gr.HTML(f"<h3>{html.escape(heading)}</h3>", js_on_load=None)
                    for text in questions:
                        examples.append(gr.Button(text, size="sm", elem_classes="asd-example-btn"))
    chatbot = gr.Chatbot(
        value=[],
        visible=False,
        show_label=False,
        elem_id="asd-chat",
        height=None,
        min_height=340,
        max_height="62vh",
        buttons=[],
        feedback_options=None,
        latex_delimiters=[],
        sanitize_html=True,
        layout="bubble",
    )
    with gr.Row(equal_height=True):
        question = gr.Textbox(
            placeholder="Posez votre question sur la santé numérique…",
            label="Votre question",
            show_label=False,
            lines=1,
            max_lines=4,
            max_length=settings.max_question_chars,
            scale=6,
            elem_id="asd-question",
            autofocus=True,
        )
        send = gr.Button("Envoyer", variant="primary", scale=1, min_width=110, elem_id="asd-send")
    with gr.Row():
        new = gr.Button("Nouvelle conversation", size="sm", elem_id="asd-new")
        copy = gr.Button("Copier la réponse et ses sources (Markdown)", size="sm", elem_id="asd-copy")
    with gr.Accordion("Options avancées", open=False, elem_id="asd-advanced"):
        backend = gr.Radio(
            choices=BACKEND_CHOICES,
            value=settings.backend,
            label="Moteur de réponse",
            elem_id="asd-backend",
        )
        k = gr.Slider(1, 10, value=settings.top_k, step=1, label="Nombre de passages consultés", elem_id="asd-k")
    with gr.Accordion("Réponse au format Markdown", open=False, elem_id="asd-markdown-box") as _box:
        markdown = gr.Textbox(
            show_label=False,
            lines=8,
            max_lines=20,
            interactive=False,
            buttons=["copy"],
            elem_id="asd-markdown",
            placeholder="La dernière réponse et ses sources apparaîtront ici, prêtes à copier.",
        )
    return _ChatWidgets(welcome, examples, chatbot, question, send, new, copy, markdown, document, backend, k)


def _corpus_panel(settings: Settings) -> _CorpusWidgets:
    """The indexed documents, and a form to add one."""
    gr.Markdown("### Documents indexés")
    summary = gr.Markdown(elem_id="asd-corpus-summary")
    table = gr.Dataframe(
        headers=CORPUS_HEADERS,
        datatype=["str", "str", "str", "str", "number"],
        interactive=False,
        wrap=True,
        column_widths=["52%", "12%", "18%", "9%", "9%"],
        buttons=[],
        elem_id="asd-corpus-table",
    )
    gr.Markdown(
        "### Ajouter un document\n"
        f"PDF (avec texte sélectionnable), Markdown (.md) ou texte (.txt) en UTF-8, {settings.max_upload_mb} Mo au plus. "
        "Le document est découpé en passages et devient interrogeable dès la fin de l'indexation."
    )
    file = gr.File(
        label="Fichier à ajouter",
        file_types=list(UPLOAD_SUFFIXES),
        file_count="single",
        type="filepath",
        height=150,
        elem_id="asd-upload",
    )
    with gr.Row():
        add = gr.Button("Ajouter et indexer", variant="primary", elem_id="asd-add", scale=0, min_width=220)
    status = gr.HTML("", elem_id="asd-upload-status", js_on_load=None)
    return _CorpusWidgets(summary, table, file, add, status)


def _wire_chat(
    app: WebApp, demo: gr.Blocks, w: _ChatWidgets, sources: gr.HTML, conversation: gr.State, pending: gr.State
) -> None:
    """Submit → show the question (no queue) → stream the answer (queued) → unlock the input."""
    take_outputs = [w.question, w.chatbot, pending, w.welcome, w.send, w.copy]
    answer_inputs = [pending, w.chatbot, conversation, w.document, w.backend, w.k]
    answer_outputs = [w.chatbot, sources, w.markdown, conversation]
    unlock_outputs = [w.question, w.send, w.copy]
    answering = []
    triggers: list[tuple[Any, list[Any]]] = [(w.question.submit, [w.question]), (w.send.click, [w.question])]
    triggers += [(button.click, [button]) for button in w.examples]
    for number, (trigger, source) in enumerate(triggers):
        named = number == 0  # one public API route (send, then answer); the other triggers are twins
        shown = trigger(
            app.take_question,
            [*source, w.chatbot],
            take_outputs,
            queue=False,
            api_name="send" if named else None,
            api_visibility="public" if named else "private",
        )
        answered = shown.then(
            app.answer,
            answer_inputs,
            answer_outputs,
            api_name="answer" if named else None,
            api_visibility="public" if named else "private",
            show_progress="minimal",
            concurrency_id="answer",
            concurrency_limit=_answer_concurrency(),
        )
        answered.then(app.unlock, None, unlock_outputs, queue=False, api_visibility="private")
        answering.append(answered)
    reset_outputs = [w.chatbot, conversation, sources, w.markdown, w.welcome, w.question, w.send, w.copy]
    for reset in (w.new.click, w.chatbot.clear):  # the chat's own bin icon means the same
        reset(app.new_conversation, None, reset_outputs, cancels=answering, queue=False, api_visibility="private")
    w.copy.click(None, [w.markdown], [w.markdown], js=COPY_JS, api_visibility="private").then(
        _copied, [w.markdown], None, queue=False, api_visibility="private"
    )


def _copied(text: str) -> None:
    """Confirm the copy (the Markdown also stays visible in its accordion for manual copying)."""
    if text:
        gr.Info("Réponse et sources copiées au format Markdown (voir aussi « Réponse au format Markdown »).")
    else:
        gr.Info("Aucune réponse à copier pour l'instant.")


def _wire_corpus(app: WebApp, demo: gr.Blocks, c: _CorpusWidgets, chat: _ChatWidgets) -> None:
    """Corpus table and filter choices on page load; upload → check → store → index → refresh."""
    demo.load(app.corpus_view, None, [c.table, chat.document, c.summary], queue=False, api_visibility="private")

    def upload(file_path: str | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return app.upload(file_path, progress)

    c.add.click(
        upload,
        [c.file],
        [c.status, c.table, chat.document, c.summary, c.file],
        concurrency_id="ingest",
        concurrency_limit=1,
        api_visibility="private",
    )


def _answer_concurrency() -> int:
    """Questions answered at once: extractive in parallel; local-model questions wait in ``ModelQueue``."""
    return 16


# --------------------------------------------------------------------------- serving

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """``"user:pass,user2:pass2"`` → Gradio's list of (user, password); None when unset."""
    if not value or not value.strip():
        return None
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError("ASSISTANT_AUTH doit être de la forme « utilisateur:motdepasse[,autre:motdepasse] ».")
        pairs.append((user, password))
    return pairs


def launch_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """Everything ``Blocks.launch`` needs besides blocking: bind, auth, limits, look."""
    return {
        "server_name": host,
        "server_port": port,
        "auth": parse_auth(settings.auth),
        "auth_message": "Accès réservé : saisissez l'identifiant et le mot de passe fournis par l'administrateur.",
        "max_file_size": f"{settings.max_upload_mb}mb",
        "show_error": False,
        "footer_links": [],
        "theme": _theme(),
        "css": CSS,
        "head": f"<script>window.ASD_MAX_UPLOAD_MB = {int(settings.max_upload_mb)};</script>{HEAD_JS}",
        "quiet": True,
    }


def launch(
    assistant: Assistant,
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    *,
    block: bool = True,
) -> gr.Blocks:
    """Serve the app (``assistant serve``); with ``block=False`` return at once (tests)."""
    host = host or settings.host
    port = port or settings.port
    if host not in LOOPBACK:
        protection = "protégé par mot de passe" if settings.auth else "SANS mot de passe (définissez ASSISTANT_AUTH)"
        print(
            f"Attention : l'application écoute sur {host}:{port} et sera accessible depuis le réseau, {protection}.",
            file=sys.stderr,
        )
    demo = build_app(assistant, settings)
    web_app: WebApp = demo.web_app  # type: ignore[attr-defined]
    if settings.backend != "extractive":
        threading.Thread(target=web_app.warm_up, args=(settings.backend,), daemon=True, name="warm-up").start()
    demo.queue(default_concurrency_limit=_answer_concurrency(), max_size=200)
    print(f"Assistant Santé numérique : http://{host}:{port}", file=sys.stderr)
    demo.launch(prevent_thread_lock=not block, **launch_options(settings, host, port))
    return demo
