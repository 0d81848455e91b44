"""The web app in a real browser: Playwright driving Debian's Chromium (never a downloaded one).

The app runs in-process (``ui.app.launch(..., block=False)``) on a free 127.0.0.1 port,
against the session index of the real corpus, with the extractive backend (instant) and
one test on the real local model. Uploads go to a temporary data dir; the document added
by the upload test is removed from the shared index afterwards.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright

from assistant.chat import Assistant
from assistant.index import Index
from assistant.retrieve import HybridRetriever
from assistant.servers import free_port
from assistant.settings import PROJECT_ROOT, Settings

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = PROJECT_ROOT / "docs" / "screenshot.png"
VIEWPORT = {"width": 1440, "height": 960}
ANSWER_TIMEOUT_MS = 60_000
LOCAL_TIMEOUT_MS = 90_000

ANSWERABLE = "Quelle est la position du groupe de travail sur le remboursement de l'e-santé ?"
UNANSWERABLE = "Quelle est la recette de la tarte tatin ?"


# --------------------------------------------------------------------------- fixtures


@dataclass
class RunningApp:
    url: str
    assistant: Assistant
    settings: Settings


@pytest.fixture(scope="module")
def running_app(corpus_index: Index, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    from ui.app import launch

    data_dir = tmp_path_factory.mktemp("ui-data")
    settings = corpus_index.settings.model_copy(
        update={"backend": "extractive", "data_dir": data_dir, "max_upload_mb": 2, "auth": None}
    )
    assistant = Assistant(settings, corpus_index, HybridRetriever(corpus_index))
    port = free_port()
    demo = launch(assistant, settings, "127.0.0.1", port, block=False)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}/", assistant, settings)
    finally:
        demo.close()
        _forget_uploads(corpus_index, settings)


def _forget_uploads(index: Index, settings: Settings) -> None:
    """Give the shared session index back its corpus-only state (cheap: nothing is re-embedded)."""
    uploads = settings.uploads_dir.resolve()
    if any(Path(d.path).resolve().parent == uploads for d in index.documents()):
        shutil.rmtree(uploads, ignore_errors=True)
        index.sync([settings.corpus_dir], prune=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium absent : installez-le avec `apt-get install -y chromium`.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, running_app: RunningApp) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, locale="fr-FR")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _open(page, running_app.url)
    yield page
    context.close()
    assert not errors, f"erreurs JavaScript : {errors}"


def _open(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#asd-question textarea")).to_be_visible(timeout=30_000)


def _ask(page: Page, question: str) -> None:
    page.locator("#asd-question textarea").fill(question)
    page.locator("#asd-question textarea").press("Enter")


def _last_bot_message(page: Page):
    return page.locator("#asd-chat [data-testid='bot']").last


def _wait_for_answer(page: Page, timeout: int = ANSWER_TIMEOUT_MS) -> None:
    """Until the last message is final: an answer, a refusal or an error (not a notice or tokens)."""
    final = _last_bot_message(page).locator(".asd-answer, .asd-refusal, .asd-error")
    expect(final).to_be_visible(timeout=timeout)


# --------------------------------------------------------------------------- tests


def test_page_loads_in_french_with_examples_and_filters(page: Page) -> None:
    expect(page).to_have_title("Assistant Santé numérique")
    expect(page.locator("#asd-header")).to_contain_text("Assistant Santé numérique")
    welcome = page.locator("#asd-welcome")
    expect(welcome).to_contain_text("start-up")
    expect(welcome).to_contain_text("acteur public")
    assert welcome.get_by_role("button").count() == 6
    expect(page.locator("#asd-sources")).to_contain_text("Les passages cités apparaîtront ici")
    expect(page.get_by_role("tab", name="Corpus")).to_be_visible()
    page.get_by_role("combobox", name="Documents interrogés").click()
    expect(page.get_by_role("option", name="Tous les documents")).to_be_visible()
    expect(page.get_by_role("option", name=re.compile("Rapport du GT"))).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_text("Options avancées").click()
    expect(page.locator("#asd-backend")).to_contain_text("Extractif")
    expect(page.locator("#asd-k")).to_be_visible()


def test_answer_with_citation_and_source_card(page: Page) -> None:
    page.get_by_role("button", name=ANSWERABLE).click()  # an example question from the empty screen
    _wait_for_answer(page)
    message = _last_bot_message(page)
    expect(message.locator(".asd-answer")).to_be_visible()
    links = message.locator("a.asd-cite")
    assert links.count() >= 1
    expect(links.first).to_have_text(re.compile(r"^\[\d+\]$"))
    target = links.first.get_attribute("href")
    assert target and re.fullmatch(r"#source-1-\d+", target)

    card = page.locator(target)
    expect(card).to_be_attached()
    expect(card.locator(".asd-card-title")).not_to_be_empty()
    expect(card.locator(".asd-card-path")).not_to_be_empty()
    expect(card.locator(".asd-passage mark")).not_to_be_empty()  # the cited sentence, highlighted
    expect(page.locator("#asd-sources")).to_contain_text("Sources de la réponse 1")

    page.locator("#asd-sources").evaluate("panel => panel.scrollTo(0, panel.scrollHeight)")
    links.last.click()
    clicked = page.locator(links.last.get_attribute("href") or "")
    expect(clicked).to_be_in_viewport()
    expect(clicked).to_have_class(re.compile("asd-flash"))  # our handler ran…
    assert len(page.context.pages) == 1  # …and the link did not open a new tab

    page.locator("#asd-copy").click()
    page.get_by_text("Réponse au format Markdown").click()
    markdown = page.locator("#asd-markdown textarea").input_value()
    assert markdown.startswith(f"**Question :** {ANSWERABLE}")
    assert "**Sources :**" in markdown and re.search(r"^\[\d+\] .+", markdown, re.MULTILINE)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#asd-sources").evaluate("panel => panel.scrollTo(0, 0)")
    page.get_by_text("Réponse au format Markdown").click()  # fold it again for the picture
    time.sleep(2)  # let the highlight of the clicked card fade
    page.screenshot(path=str(SCREENSHOT))


def test_unanswerable_question_shows_refusal_style(page: Page) -> None:
    _ask(page, UNANSWERABLE)
    _wait_for_answer(page)
    refusal = _last_bot_message(page).locator(".asd-refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("ne permettent pas de répondre")
    assert refusal.evaluate("e => getComputedStyle(e).borderLeftStyle") == "solid"
    assert _last_bot_message(page).locator("a.asd-cite").count() == 0
    expect(page.locator("#asd-sources")).to_contain_text("Aucun passage des documents ne répond")


def test_invalid_question_gets_a_friendly_message(page: Page) -> None:
    _ask(page, "?!… ;;")
    _wait_for_answer(page)
    error = _last_bot_message(page).locator(".asd-error")
    expect(error).to_contain_text("aucun mot")
    expect(error).not_to_contain_text("Traceback")


def test_unreachable_backend_gets_a_friendly_message(page: Page) -> None:
    page.get_by_text("Options avancées").click()
    page.locator("#asd-backend").get_by_text("Serveur compatible OpenAI").click()  # no server configured
    _ask(page, ANSWERABLE)
    _wait_for_answer(page)
    error = _last_bot_message(page).locator(".asd-error")
    expect(error).to_contain_text("indisponible")
    expect(error).to_contain_text("Extractif")
    expect(error).not_to_contain_text("Traceback")
    expect(page.locator("#asd-question textarea")).to_be_editable()  # the page is usable again


def test_new_conversation_clears_history(page: Page) -> None:
    _ask(page, ANSWERABLE)
    _wait_for_answer(page)
    page.locator("#asd-new").click()
    expect(page.locator("#asd-welcome")).to_be_visible()
    expect(page.locator("#asd-sources")).to_contain_text("Les passages cités apparaîtront ici")
    _ask(page, UNANSWERABLE)
    _wait_for_answer(page)
    # a fresh conversation: the refusal is not polluted by the previous question
    expect(_last_bot_message(page).locator(".asd-refusal")).to_be_visible()
    expect(page.locator("#asd-chat [data-testid='user']")).to_have_count(1)


def test_two_users_see_only_their_own_conversation(browser: Browser, running_app: RunningApp) -> None:
    questions = [
        "Quelles difficultés les start-ups de l'e-santé rencontrent-elles pour accéder au marché ?",
        "Comment l'achat public peut-il stimuler l'innovation en santé numérique ?",
    ]
    contexts = [browser.new_context(viewport=VIEWPORT, locale="fr-FR") for _ in questions]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            _open(page, running_app.url)
        for page, question in zip(pages, questions, strict=True):  # both in flight at once
            _ask(page, question)
        for page in pages:
            _wait_for_answer(page)
        for page, mine, theirs in ((pages[0], *questions), (pages[1], *reversed(questions))):
            users = page.locator("#asd-chat [data-testid='user']")
            expect(users).to_have_count(1)
            expect(users.first).to_have_text(mine)
            expect(page.locator("#asd-chat")).not_to_contain_text(theirs)
            expect(page.locator("#asd-sources")).to_contain_text(mine[:40])
    finally:
        for context in contexts:
            context.close()


def test_upload_rejects_a_fake_pdf(page: Page, running_app: RunningApp) -> None:
    page.get_by_role("tab", name="Corpus").click()
    page.locator("#asd-upload input[type=file]").set_input_files(
        files=[{"name": "rapport.pdf", "mimeType": "application/pdf", "buffer": b"MZ\x90\x00 not a pdf"}]
    )
    page.locator("#asd-add").click()
    status = page.locator("#asd-upload-status .asd-status-error")
    expect(status).to_contain_text("n'est pas un vrai PDF", timeout=30_000)
    uploads = running_app.settings.uploads_dir
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_over_the_size_limit_is_refused_in_french(page: Page, running_app: RunningApp) -> None:
    page.get_by_role("tab", name="Corpus").click()
    too_big = (running_app.settings.max_upload_mb + 1) * 1024 * 1024
    page.locator("#asd-upload input[type=file]").set_input_files(
        files=[{"name": "gros.txt", "mimeType": "text/plain", "buffer": b"a" * too_big}]
    )
    expect(page.locator("#asd-upload-guard")).to_contain_text("trop volumineux")
    uploads = running_app.settings.uploads_dir
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_markdown_is_indexed_listed_and_answerable(page: Page, running_app: RunningApp) -> None:
    title = "Note de test sur la télésurveillance zéphyrine"
    text = (
        f"# {title}\n\n## Recommandation\n\n"
        "Le comité zéphyrin recommande un forfait annuel de télésurveillance de 420 euros par patient.\n"
    )
    page.get_by_role("tab", name="Corpus").click()
    expect(page.locator("#asd-corpus-table")).to_contain_text("Rapport de groupe de travail")
    page.locator("#asd-upload input[type=file]").set_input_files(
        files=[{"name": "../../Note télésurveillance (v2).md", "mimeType": "text/markdown", "buffer": text.encode()}]
    )
    page.locator("#asd-add").click()
    expect(page.locator("#asd-upload-status .asd-status-ok")).to_contain_text(title, timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#asd-corpus-table")).to_contain_text(title)

    uploads = running_app.settings.uploads_dir.resolve()
    stored = [p for p in uploads.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in stored] == ["Note-telesurveillance-v2.md"]  # sanitised, inside uploads_dir

    page.get_by_role("tab", name="Poser une question").click()
    _ask(page, "Que recommande le comité zéphyrin pour la télésurveillance ?")
    _wait_for_answer(page)
    expect(_last_bot_message(page)).to_contain_text("420 euros")
    expect(page.locator("#asd-sources")).to_contain_text(title)


@pytest.mark.slow
def test_local_model_streams_a_cited_answer(page: Page, running_app: RunningApp) -> None:
    running_app.assistant.llm("local")  # load the real model before the clock starts
    page.get_by_text("Options avancées").click()
    page.locator("#asd-backend").get_by_text("Modèle local").click()
    _ask(page, "Quelle croissance du marché de l'e-santé est attendue entre 2019 et 2023 ?")
    # while the model reads its prompt, the passages it reads are listed; then its tokens come
    expect(_last_bot_message(page).locator(".asd-reading")).to_contain_text("[1]", timeout=LOCAL_TIMEOUT_MS)
    draft = _last_bot_message(page).locator(".asd-streaming .asd-draft")
    expect(draft).to_have_text(re.compile(r"\w{3,}"), timeout=LOCAL_TIMEOUT_MS)  # tokens as they come
    _wait_for_answer(page, timeout=LOCAL_TIMEOUT_MS)
    message = _last_bot_message(page)
    expect(message.locator(".asd-answer")).to_contain_text("160")
    expect(message.locator(".asd-answer-meta")).to_contain_text("modèle local")
    assert message.locator("a.asd-cite").count() >= 1
    expect(page.locator("#asd-sources .asd-card").first).to_be_visible()


def test_eight_concurrent_api_sessions_get_their_own_answers(running_app: RunningApp) -> None:
    """Eight clients hit the app's HTTP API at once: no error, no answer given to the wrong caller."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    questions = [
        "Qui co-anime le groupe de travail sur la structuration de la filière ?",
        "Quelle croissance du marché de l'e-santé est attendue entre 2019 et 2023 ?",
        "Quels fonds la stratégie veut-elle renforcer pour le financement late stage ?",
        "Combien de personnes ont répondu à l'enquête du groupe de travail ?",
        "Quelle date limite de réponse à la consultation ?",
        "Quel rôle pour la Haute Autorité de santé dans l'évaluation des dispositifs ?",
        "Quelle est la recette de la tarte tatin ?",
        "Quelles difficultés financières pour les entreprises d'e-santé étudiées ?",
    ]

    def ask(question: str) -> dict:
        client = Client(running_app.url, verbose=False)
        return client.predict(question, "", "extractive", 5, api_name="/ask")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, questions))
    for question, result in zip(questions, results, strict=True):
        assert "error" not in result, result
        assert result["question"] == question
        assert result["refused"] or result["citations"]
    assert results[6]["refused"]  # the off-topic one
