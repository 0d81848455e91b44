"""Stage 5 — the pipeline object every shell (CLI, web UI, eval harness) runs.

``Assistant`` owns the index, the retriever, the grounding checks and the LLM backends;
``Conversation`` holds one user's history. One question flows through a LangChain (LCEL)
chain of four steps over a ``Turn``:

    prepare (clean, detect language, condense with history)
    → retrieve (hybrid) and judge sufficiency
    → generate (LLM with numbered sources, or extractive), streaming tokens
    → finalize (attribute citations in code, refuse when nothing is supported)
"""

from __future__ import annotations

import queue
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from langchain_core.runnables import Runnable, RunnableLambda

from assistant.embedding import build_embedder
from assistant.errors import BackendUnavailableError, InvalidQuestionError
from assistant.generate import (
    REFUSAL_SENTINEL_EN,
    REFUSAL_SENTINEL_FR,
    RULES_REFUSAL_EN,
    RULES_REFUSAL_FR,
    AttributedAnswer,
    Grounder,
    PreparedSource,
    SourceSentence,
    Sufficiency,
    accept_standalone,
    accept_translation,
    build_condense_messages,
    build_messages,
    build_translation_messages,
    expects_figure,
    is_refusal,
    source_label,
    strip_citations,
    strip_instructions,
)
from assistant.index import Index
from assistant.ingest import sentence_spans
from assistant.lexical import detect_language, raw_tokens
from assistant.llm import ChatLLM, KeepsPrefix, Message, Warmup, WeighsRefusal, build_llm
from assistant.retrieve import HybridRetriever
from assistant.schema import Answer, Citation, Reading, ScoredChunk, Timings
from assistant.settings import Settings

TokenCallback = Callable[[str], None]
_T = TypeVar("_T")


class GenerationCancelledError(Exception):
    """Raised inside the generation loop when the consumer of ``Assistant.stream`` stopped."""


@dataclass
class Conversation:
    """One user's dialogue; the web app keeps one per browser session."""

    answers: list[Answer] = field(default_factory=list)

    def history(self) -> list[tuple[str, str]]:
        return [(a.question, a.text) for a in self.answers]

    def reset(self) -> None:
        self.answers.clear()


@dataclass
class Turn:
    """The state one question carries through the chain."""

    question: str  # what is asked: the user's words without clauses addressed to the rules, "la seconde" resolved
    history: list[tuple[str, str]]
    previous_queries: list[str]
    backend: str
    k: int
    doc_id: str | None = None
    on_token: TokenCallback | None = None
    on_reading: Callable[[Reading], None] | None = None
    lang: str = "fr"
    asked: str = ""  # the user's words as typed (cleaned)
    standalone: str = ""
    query: str = ""
    french: str = ""  # an English question's French form, searched beside it
    hits: list[ScoredChunk] = field(default_factory=list)
    sources: list[PreparedSource] = field(default_factory=list)
    sufficiency: Sufficiency | None = None
    raw_answer: str = ""
    refusal_probability: float | None = None  # the model's, when the backend can say (WeighsRefusal)
    overruled_refusal: bool = False  # the model's likeliest opening was a refusal, not likely enough
    started: float = field(default_factory=time.perf_counter)
    retrieval_seconds: float = 0.0
    first_token_seconds: float | None = None
    answer: Answer | None = None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_question(question: str, max_chars: int) -> str:
    """Strip control/invisible characters and check length; raise a clear error otherwise."""
    if not isinstance(question, str):
        raise InvalidQuestionError("La question doit être du texte.")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", question))
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise InvalidQuestionError("La question est vide : écrivez une question sur la santé numérique.")
    if len(text) > max_chars:
        raise InvalidQuestionError(
            f"La question est trop longue ({len(text)} caractères, maximum {max_chars}). Raccourcissez-la."
        )
    if not re.search(r"\w", text):
        raise InvalidQuestionError("La question ne contient aucun mot.")
    return text


_REFERS_BACK = re.compile(
    r"\b(?:celui|celle|ceux|celles)(?:-ci|-là)?\b|\bces? derni(?:er|ère)s?\b|\bcette dernière\b"
    r"|\b(?:le|la|les|du|au|aux|des)\s+(?:premi(?:er|ère)s?|deuxièmes?|second(?:e|s|es)?|troisièmes?|quatrièmes?"
    r"|cinquièmes?|derni(?:er|ère)s?)\b"
    r"|\bthe\s+(?:first|second|third|fourth|fifth|last|latter|former)\b|\b(?:this|that|these|those)\s+ones?\b",
    re.IGNORECASE,
)


NO_VERIFIED_ANSWER_FR = "Je ne trouve pas dans les documents de réponse vérifiable à cette question."
NO_VERIFIED_ANSWER_EN = "I find no verifiable answer to this question in the documents."
_REFUSALS = (
    REFUSAL_SENTINEL_FR,
    REFUSAL_SENTINEL_EN,
    RULES_REFUSAL_FR,
    RULES_REFUSAL_EN,
    NO_VERIFIED_ANSWER_FR,
    NO_VERIFIED_ANSWER_EN,
)
_REFUSAL_OPENINGS = (REFUSAL_SENTINEL_FR, REFUSAL_SENTINEL_EN)  # how the answer prompt teaches the model to refuse
_REFUSAL_MAX_CHARS = 200  # a longer reply that says it cannot answer also states facts: it is attributed


def refers_back(question: str) -> bool:
    """Whether a follow-up points at something of the previous answer ("la seconde", "celui-ci", "the latter")."""
    return bool(_REFERS_BACK.search(question))


_ORDINALS = {
    "premier": 0, "première": 0, "first": 0, "former": 0,
    "deuxième": 1, "second": 1, "seconde": 1,
    "troisième": 2, "third": 2, "quatrième": 3, "fourth": 3, "cinquième": 4, "fifth": 4,
    "dernier": -1, "dernière": -1, "last": -1, "latter": -1,
}  # fmt: skip
_ORDINAL_REFERENCE = re.compile(
    r"\b(?P<article>le|la|les|du|au|aux|des|the)\s+(?P<ordinal>premi(?:er|ère)|deuxième|second(?:e)?|troisième"
    r"|quatrième|cinquième|derni(?:er|ère)|first|third|fourth|fifth|last|latter|former)s?\b"
    r"(?:\s+(?:one|item|point|axe|élément|partie?-pris))?"
    # a pronoun, not an adjective ("le premier ministre"): what follows ends the phrase or is a verb
    r"(?=\s*(?:$|[^\w\s]|(?:est|a|fait|dit|propose|recouvre|concerne|signifie|comprend|prévoit|vise|porte|occupe"
    r"|is|was|does|do|did|has|include|includes|mean|means|cover|covers|say|says|involve|involves)\b"
    r"|\w+-(?:t-)?(?:il|elle|ils|elles)\b))",
    re.IGNORECASE,
)
_RANGE_START = re.compile(r"\b(?:entre|between)\s+\S+$", re.IGNORECASE)
_CIRCUMSTANCE = re.compile(r"^\s*(?:(?:le|en|au|du|depuis|on|in)\s+)?\d", re.IGNORECASE)
_LEAD_CLAUSE = re.compile(r"^[^()]{0,80}?\b(?:sont|est|étaient|était|are|is|were|was)\s+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+)")
_LIST_OPENER = re.compile(r"^(?:D'après le corpus|According to the corpus)\s*:\s*", re.IGNORECASE)


def listed_items(answer: str) -> list[str]:
    """The items an answer enumerates ("A (rôle), B et C", "Cinq axes : a, b, c", a bulleted list),
    citations and quote marks removed; fewer than two means the answer is not a list."""
    text = re.sub(r"[«»“”]", " ", _LIST_OPENER.sub("", strip_citations(answer)))
    bullets = [m[1].strip().rstrip(" .;") for line in text.splitlines() if (m := _BULLET.match(line))]
    if len(bullets) >= 2:
        return bullets
    text = re.sub(r"\s+", " ", text).strip().rstrip(".")
    after_colon = _split_top_level(text, ":", maxsplit=1)[1:]
    if after_colon and len(_enumeration(after_colon[0])) >= 2:
        text = after_colon[0]
    return _enumeration(text)


def _enumeration(text: str) -> list[str]:
    """Split "a, b et c" (or "a; b; c") at the top level, outside parentheses."""
    parts = _split_top_level(text, ";")
    if len(parts) < 2:  # "A et B, le 24 avril 2020": a date after the list is not an item
        parts = [p for p in _split_top_level(text, ",") if not _CIRCUMSTANCE.match(p)]
    *first, last = parts
    tail = re.split(r"\s+(?:et|and)\s+(?![^()]*\))", last, maxsplit=1) if len(parts) <= 6 else [last]
    if len(tail) == 2 and _RANGE_START.search(tail[0]):  # "entre 2019 et 2023" is one item
        tail = [last]
    items = [p.strip(" .") for p in [*first, *tail] if p.strip(" .")]
    if items:  # "Les co-animateurs sont A et B": the first item is A
        items[0] = _LEAD_CLAUSE.sub("", items[0]) or items[0]
    if any(len(item.split()) > 20 for item in items):  # clauses of a quoted sentence, not listed things
        return []
    return items if len(items) >= 2 else []


def _split_top_level(text: str, separator: str, maxsplit: int = 0) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")" and depth > 0
        if char == separator and depth == 0 and (not maxsplit or len(parts) < maxsplit):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def resolve_ordinal(question: str, previous_answer: str) -> str:
    """The question with "la seconde", "le dernier", "the second one"… replaced by that item of
    the previous answer's list, or the question unchanged when there is no such item.

    The model is shown earlier questions, not earlier answers (it would repeat them), so without
    this it cannot know who "la seconde" is; retrieval and quotes also need the item's words.
    """
    match = _ORDINAL_REFERENCE.search(question)
    if not match or previous_answer.startswith(_REFUSALS):
        return question
    items = listed_items(previous_answer)
    index = _ORDINALS[match["ordinal"].lower()]
    if not items or index >= len(items):
        return question
    item = items[index]
    if len(item) > 160:
        item = item[:160].rsplit(" ", 1)[0] + " …"
    article = match["article"].lower()
    prefix = {"du": "de ", "des": "de ", "au": "à ", "aux": "à "}.get(article, "")
    return f"{question[: match.start()]}{prefix}« {item} »{question[match.end() :]}"


def condense(question: str, previous_standalone: list[str], history: list[tuple[str, str]]) -> tuple[str, str]:
    """(standalone question, search query) for a turn.

    A follow-up is read together with the previous standalone question (bounded: a long
    chain restarts from the previous raw question); a short one ("Et pour la deuxième ?")
    is also *searched* with the previous answer, whose names and items it refers to.
    """
    if not previous_standalone or not previous_standalone[-1]:  # none, or a refused change of rules
        return question, question
    context = previous_standalone[-1]
    if len(context) > 300 and history:
        context = history[-1][0]
    standalone = f"{context} {question}"
    query = standalone
    if len(raw_tokens(question)) <= 10 and history and not history[-1][1].startswith(_REFUSALS):
        previous_answer = strip_citations(history[-1][1])[:300]
        query = f"{context} {previous_answer} {question}"
    return standalone, query


def _prompt_variants() -> list[list[Message]]:
    """Two answer prompts that differ only after the part every question shares (the rules
    and examples): what a backend that keeps that prefix reads ahead of the first question."""
    return [build_messages(question, [], (), "fr") for question in ("?", "!")]


def _load_llm(settings: Settings, backend: str) -> tuple[ChatLLM, Warmup | None]:
    """The backend's LLM; a local model reads the prompt prefix at once."""
    llm = build_llm(settings, backend)
    warmup = llm.warm_prefix(_prompt_variants(), settings.prompt_states_dir) if isinstance(llm, KeepsPrefix) else None
    return llm, warmup


class Assistant:
    """Retrieval-augmented, cited answers over the indexed corpus."""

    def __init__(
        self, settings: Settings, index: Index, retriever: HybridRetriever, llm: ChatLLM | None = None
    ) -> None:
        self.settings = settings
        self.index = index
        self.retriever = retriever
        self.grounder = Grounder(index.embedder, index.state.lexical, snippet_chars=settings.snippet_chars)
        self.grounder.know_documents(index.documents())
        self._llms: dict[str, ChatLLM] = {}
        self.warmup: Warmup | None = None  # the local model's reading of the prompt prefix, once loaded
        if llm is not None:
            self._llms[settings.backend] = llm
        self.chain: Runnable = (
            RunnableLambda(self._prepare, name="prepare")
            | RunnableLambda(self._retrieve, name="retrieve")
            | RunnableLambda(self._generate, name="generate")
            | RunnableLambda(self._finalize, name="finalize")
        ).with_config(run_name="assistant-sante")

    @classmethod
    def from_settings(cls, settings: Settings, load_llm: bool = True) -> Assistant:
        """The pipeline on the configured index and backend; the LLM loads on another thread
        while the index opens (llama.cpp's loading runs outside the GIL)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            has_llm = load_llm and settings.backend != "extractive"
            loading = pool.submit(_load_llm, settings, settings.backend) if has_llm else None
            index = Index(settings, build_embedder(settings))
            index.load()
            retriever = HybridRetriever.from_settings(index, settings)
            assistant = cls(settings, index, retriever)
            if loading is not None:
                assistant._llms[settings.backend], assistant.warmup = loading.result()
        return assistant

    def refresh(self) -> None:
        """Re-read the index after an ingest (new documents, new BM25 statistics)."""
        self.index.load()
        self.grounder.lexical = self.index.state.lexical
        self.grounder.know_documents(self.index.documents())

    def llm(self, backend: str) -> ChatLLM:
        """The backend's LLM, loaded on first use; a local model reads the prompt prefix at once."""
        if backend not in self._llms:
            llm, warmup = _load_llm(self.settings, backend)
            self._llms[backend] = llm
            if warmup is not None:
                self.warmup = warmup
        return self._llms[backend]

    # ------------------------------------------------------------------ public API
    def ask(
        self,
        question: str,
        conversation: Conversation | None = None,
        *,
        doc_id: str | None = None,
        backend: str | None = None,
        k: int | None = None,
        on_token: TokenCallback | None = None,
        on_reading: Callable[[Reading], None] | None = None,
    ) -> Answer:
        """Answer one question (appended to ``conversation`` when given); ``on_reading`` is told
        the passages chosen, before the model reads them, ``on_token`` each token it writes."""
        conversation = conversation if conversation is not None else Conversation()
        turn = Turn(
            question=question,
            history=conversation.history(),
            previous_queries=[a.standalone_question for a in conversation.answers],
            backend=backend or self.settings.backend,
            k=k or self.settings.top_k,
            doc_id=doc_id or None,
            on_token=on_token,
            on_reading=on_reading,
        )
        result: Turn = self.chain.invoke(turn)
        assert result.answer is not None
        conversation.answers.append(result.answer)
        return result.answer

    def stream(
        self, question: str, conversation: Conversation | None = None, **options: object
    ) -> Iterator[str | Reading | Answer]:
        """Yield the passages chosen (``Reading``, when there are any), the text tokens as they
        are generated, then the final ``Answer`` (citations resolved)."""
        events: queue.Queue[object] = queue.Queue()
        done = object()
        cancelled = threading.Event()

        def on_token(token: str) -> None:
            if cancelled.is_set():  # the caller went away: stop generating, free the model
                raise GenerationCancelledError
            events.put(token)

        def on_reading(reading: Reading) -> None:
            if cancelled.is_set():
                raise GenerationCancelledError
            events.put(reading)

        def run() -> None:
            try:
                answer = self.ask(question, conversation, on_token=on_token, on_reading=on_reading, **options)  # type: ignore[arg-type]
                events.put(answer)
            except GenerationCancelledError:
                pass
            except BaseException as exc:  # handed to the caller's thread
                events.put(exc)
            finally:
                events.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while (event := events.get()) is not done:
                if isinstance(event, BaseException):
                    raise event
                yield event  # type: ignore[misc]
        finally:
            cancelled.set()
            # never leave the worker running behind the caller: it may be inside torch (the
            # attribution step) when the interpreter exits, which aborts the process
            worker.join(timeout=30)

    # ------------------------------------------------------------------ chain steps
    def _prepare(self, turn: Turn) -> Turn:
        turn.asked = clean_question(turn.question, self.settings.max_question_chars)
        turn.question = strip_instructions(turn.asked)[0]
        turn.lang = detect_language(turn.asked)
        if turn.question and turn.history:
            resolved = resolve_ordinal(turn.question, turn.history[-1][1])
            if resolved == turn.question:
                resolved = self._condense_with_llm(turn)
            turn.question = resolved
        if turn.question:
            turn.standalone, turn.query = condense(turn.question, turn.previous_queries, turn.history)
            turn.french = self._translate(turn)
        return turn

    def _translate(self, turn: Turn) -> str:
        """The French form of an English question ("" when not wanted or not trusted).

        The corpus is French: BM25 finds nothing for English words, and e5 ranks the passages
        of an English question lower. The translation only searches and picks sentences; the
        model still answers the question as asked.
        """
        follow_up = turn.standalone != turn.question  # searched with its context, which stays English
        if turn.lang != "en" or follow_up or turn.backend == "extractive" or not self.settings.translate_questions:
            return ""
        messages = build_translation_messages(turn.question)
        translation = self._short_call(turn.backend, messages)
        return translation if accept_translation(translation, turn.question) else ""

    def _condense_with_llm(self, turn: Turn) -> str:
        """A short follow-up rewritten by the LLM into a standalone question, when the rewrite
        passes ``accept_standalone``; otherwise the follow-up as asked. The extractive backend,
        and a turn after a refusal, keep the rule-based condensation alone."""
        previous_question, previous_answer = turn.history[-1]
        if (
            turn.backend == "extractive"
            or not self.settings.llm_condense
            or len(raw_tokens(turn.question)) > 12
            or not previous_question
            or not previous_answer
            or previous_answer.startswith(_REFUSALS)
        ):
            return turn.question
        messages = build_condense_messages(previous_question, previous_answer, turn.question)
        rewrite = self._short_call(turn.backend, messages)
        if accept_standalone(rewrite, turn.question, previous_question, previous_answer):
            return rewrite
        return turn.question

    def _retrieve(self, turn: Turn) -> Turn:
        if not turn.question:  # nothing asked but a change of rules: nothing to search
            return turn
        queries = list(dict.fromkeys(q for q in (turn.query, turn.question, turn.french) if q))
        turn.hits = self.retriever.retrieve(queries, k=turn.k, doc_id=turn.doc_id)
        # judge on the question's own terms; a bare follow-up ("Et en 2023 ?") leans on its context
        own = self.grounder.sufficiency(turn.question, turn.hits, turn.lang)
        if not own.ok and turn.standalone != turn.question and not own.missing_hard:
            # a follow-up may lean on its context, unless its own words are foreign to the corpus
            # ("la recette de la tarte tatin" after a question on funding); a follow-up that points
            # back ("le poste de la seconde ?") or names a figure the passages hold ("Et à
            # l'horizon 2023 ?") is about the conversation whatever its framing words
            with_context = self.grounder.sufficiency(
                turn.standalone, turn.hits, turn.lang, hard_terms_of=turn.standalone
            )
            names_figure = bool(re.search(r"\d", turn.question))  # held by the passages: no missing_hard
            on_topic = self.grounder.known_share(own.key_terms) >= 0.5 or refers_back(turn.asked) or names_figure
            if not with_context.missing_hard and on_topic:
                own = with_context
                own.ok = True
        turn.sufficiency = own
        max_sources = turn.k if turn.backend == "extractive" else min(turn.k, self.settings.llm_sources)
        if turn.sufficiency.ok:
            # an English question's sentences are picked on its French form, which shares their words
            question, lang = (turn.french, "fr") if turn.french else (turn.question, turn.lang)
            turn.sources = self.grounder.select_sources(question, turn.hits, max_sources, lang)
        turn.retrieval_seconds = time.perf_counter() - turn.started
        if turn.sources and turn.on_reading:
            interpreted = turn.question if turn.question != turn.asked else ""
            turn.on_reading(Reading([s.citation for s in turn.sources], interpreted))
        return turn

    def _generate(self, turn: Turn) -> Turn:
        if not turn.sources:
            return turn
        if turn.backend == "extractive":
            return turn  # nothing to generate: finalize quotes the sources
        messages = build_messages(turn.question, turn.sources, turn.history[-2:], turn.lang)

        def on_token(token: str) -> None:
            if turn.first_token_seconds is None:
                turn.first_token_seconds = time.perf_counter() - turn.started
            if turn.on_token:
                turn.on_token(token)

        llm = self.llm(turn.backend)
        weighs = isinstance(llm, WeighsRefusal) and self.settings.refuse_at <= 1.0
        avoided: tuple[str, ...] = ()  # the refusals the last reply was kept from opening with
        if weighs:
            weight = self._call(turn.backend, lambda: llm.weigh_refusal(messages, _REFUSAL_OPENINGS))
            turn.refusal_probability = round(weight.probability, 4)
            if weight.preferred and weight.probability >= self.settings.refuse_at:
                turn.raw_answer = REFUSAL_SENTINEL_EN if turn.lang == "en" else REFUSAL_SENTINEL_FR
                on_token(turn.raw_answer)
                return turn
            if weight.preferred:  # the refusal was only the likeliest opening: take the likeliest answer
                turn.overruled_refusal = True
                avoided = _REFUSAL_OPENINGS
        self._reply(turn, llm, messages, avoided, on_token)
        for _ in range(2):
            # a refusal the weighing did not foresee: a paraphrase ("Le rapport ne contient pas cette
            # information."), or the taught one reached although weighed unlikely (decoding's repeat
            # penalty steers greedy decoding off the prompt's own words). It is weighed with the ones
            # already weighed: unless they are that likely together, the likeliest reply opening with none
            spans = sentence_spans(turn.raw_answer)
            opening = turn.raw_answer[spans[0][0] : spans[0][1]].strip() if spans else turn.raw_answer
            if (
                not weighs
                or not is_refusal(opening)
                or opening in avoided
                or len(turn.raw_answer) >= _REFUSAL_MAX_CHARS
            ):
                break  # a long reply that opens with a refusal is attributed like any answer (_finalize)
            openings = tuple(dict.fromkeys((*_REFUSAL_OPENINGS, *avoided, opening)))
            weight = self._call(turn.backend, lambda openings=openings: llm.weigh_refusal(messages, openings))
            turn.refusal_probability = round(weight.probability, 4)
            if weight.probability >= self.settings.refuse_at:
                break
            turn.overruled_refusal, avoided = True, openings
            on_token("\n")  # the draft goes on with the reply that replaces the refusal
            self._reply(turn, llm, messages, avoided, on_token)
        return turn

    def _reply(
        self, turn: Turn, llm: ChatLLM, messages: list[Message], avoided: tuple[str, ...], on_token: TokenCallback
    ) -> None:
        """The model's greedy reply, or its likeliest one that opens with none of ``avoided``."""
        stop = ["\nQUESTION", "SOURCES :"]
        max_tokens = self.settings.max_answer_tokens
        if avoided and isinstance(llm, WeighsRefusal):
            tokens = partial(llm.stream_avoiding, messages, avoided, max_tokens=max_tokens, stop=stop)
        else:
            tokens = partial(llm.stream, messages, max_tokens=max_tokens, stop=stop)
        turn.raw_answer = self._complete(turn.backend, tokens, on_token).strip()

    def _short_call(self, backend: str, messages: list[Message]) -> str:
        """A one-line reply (translation, follow-up rewrite)."""
        llm = self.llm(backend)
        return self._complete(backend, lambda: llm.stream(messages, max_tokens=80, stop=["\n"])).strip()

    def _complete(
        self, backend: str, tokens: Callable[[], Iterator[str]], on_token: TokenCallback | None = None
    ) -> str:
        """The LLM's whole reply, each token also handed to ``on_token``."""

        def collect() -> str:
            parts: list[str] = []
            for token in tokens():
                parts.append(token)
                if on_token:
                    on_token(token)
            return "".join(parts)

        return self._call(backend, collect)

    @staticmethod
    def _call(backend: str, call: Callable[[], _T]) -> _T:
        """Run a call to the LLM; a backend that cannot be reached raises ``BackendUnavailableError``."""
        try:
            return call()
        except BackendUnavailableError:
            raise
        except (ConnectionError, OSError) as exc:
            raise BackendUnavailableError(f"Backend « {backend} » indisponible : {exc}") from exc

    def _finalize(self, turn: Turn) -> Turn:
        """Attribute the model's answer in code; fall back to quoting the sources, or refuse.

        A 1.5B model often refuses, or restates the question, although the answer is in its
        sources. When it refused but one source sentence carries most of the question's key
        terms, the answer quotes the best source sentences instead (``mode="extractive"``).
        When none of its sentences is supported (and it invented no figure), the answer quotes
        the source sentence its dropped answer was read from (``AttributedAnswer.anchors``: the
        facts are there, the answer only reworded the question's terms). Any other quote is the
        passage nearest the question, not an answer: it is shown after the refusal. Replayed on
        the 89 quotes that replaced a French single-turn answer in the dev and held-out 5–10 runs,
        anchored quotes held the evidence 25 times in 31 (3 wrong, 2 unanswerable, 1 adversarial);
        the others 27 times in 58 (20 wrong, 8 unanswerable, 3 adversarial), 20 in 47 on the
        held-out sets alone. Anchors also stand after a refusal the model nearly gave (24 such
        cases: 3 anchored quotes, 2 valid and 1 wrong), where nothing was ever quoted before; the
        nearest passage is shown there too.
        """
        refusal_reason = ""
        result = AttributedAnswer("", {}, [])
        nearest = AttributedAnswer("", {}, [])  # a refusal's passage nearest the question, if any
        mode = "generated"
        if not turn.question:
            refusal_reason = "la question ne demande que de changer les règles de l'assistant"
        elif not turn.hits:
            refusal_reason = "aucun passage trouvé"
        elif not turn.sources:
            suff = turn.sufficiency
            missing = ", ".join((suff.missing_hard if suff else [])[:4])
            refusal_reason = "termes clés absents des passages" + (f" ({missing})" if missing else "")
        elif turn.backend == "extractive":
            result, mode = self._quote(turn), "extractive"
            turn.first_token_seconds = time.perf_counter() - turn.started  # the whole answer at once
            if turn.on_token and result.text:
                turn.on_token(result.text)
            refusal_reason = "aucune phrase des sources ne contient les termes ou le chiffre demandés"
        elif is_refusal(turn.raw_answer) and len(turn.raw_answer) < _REFUSAL_MAX_CHARS:
            refusal_reason = "le modèle juge que les sources ne répondent pas"
            if turn.refusal_probability is not None:
                refusal_reason += f" (probabilité du refus : {turn.refusal_probability:.2f})"
            if self.grounder.evidence_strength(turn.standalone, turn.sources) >= self.settings.overrule_refusal_at:
                result, mode = self._quote(turn), "extractive"
        else:
            result = self.grounder.attribute(
                turn.raw_answer, turn.sources, turn.lang, turn.question, expects_figure(turn.question)
            )
            refusal_reason = "aucune phrase de la réponse n'est étayée par les sources"
            if not result.text and self.grounder.invented_figures(turn.raw_answer, turn.sources, turn.question):
                refusal_reason = "le modèle avance des chiffres absents des sources"
            elif not result.text:
                # only the sentence the model read its facts from answers in its place (see the doc)
                dropped = result.dropped
                if result.anchors:
                    result = self._quote(turn, prefer=result.anchors, only_preferred=True)
                if not result.text and self.settings.answer_with_nearest_quote and not turn.overruled_refusal:
                    result = self._quote(turn)
                if result.text:
                    mode = "extractive"
                else:
                    if turn.overruled_refusal:
                        refusal_reason = (
                            "le modèle penchait pour le refus et sa réponse n'est pas étayée par les sources"
                        )
                    nearest = self._quote(turn, opener="")
                    if nearest.text:
                        refusal_reason += " ; le passage le plus proche est cité, sans être donné pour une réponse"
                result.dropped = dropped
        text, cited, dropped = result.text, result.cited, result.dropped
        if text:
            refusal_reason = ""
        else:
            mode = "refused"
        sources = [s.citation for s in turn.sources]
        refused = not text
        if refused:
            text = self.refusal_text(turn, nearest.text)
            cited = nearest.cited
        citations = [Citation(s.n, s.chunk, cited[s.n]) for s in sources if s.n in cited]
        turn.answer = Answer(
            question=turn.asked,
            text=text,
            refused=refused,
            citations=citations,
            sources=sources,
            standalone_question=turn.standalone,
            interpreted_question=turn.question if turn.question and turn.question != turn.asked else "",
            backend=turn.backend,
            timings=Timings(
                retrieval=round(turn.retrieval_seconds, 3),
                first_token=None if turn.first_token_seconds is None else round(turn.first_token_seconds, 3),
                total=round(time.perf_counter() - turn.started, 3),
            ),
            refusal_reason=refusal_reason,
            refusal_probability=turn.refusal_probability,
            raw_text=turn.raw_answer,
            dropped=dropped,
            mode=mode,
        )
        return turn

    def _quote(
        self,
        turn: Turn,
        prefer: Sequence[SourceSentence] = (),
        only_preferred: bool = False,
        opener: str | None = None,
    ) -> AttributedAnswer:
        """Quote on the user's own words; a bare follow-up ("Développe le dernier.") on its standalone
        form; an English question on its French translation, whose words the sources share (in
        English only names and acronyms can be matched, and a question without any was quoted any
        sentence e5 found close, e.g. a funding need "de 50 M€" for a count of data warehouses)."""
        if turn.french:
            question, lang = turn.french, "fr"
        else:
            own_words = self.grounder.known_key_terms(turn.question, turn.lang)
            question, lang = (turn.question if own_words else turn.standalone), turn.lang
        return self.grounder.extract(
            question,
            turn.sources,
            lang=lang,
            wants_figure=expects_figure(turn.question),
            prefer=prefer,
            reply_lang=turn.lang,
            only_preferred=only_preferred,
            opener=opener,
        )

    def refusal_text(self, turn: Turn, nearest: str = "") -> str:
        """A plain refusal that says what the corpus does cover; or, given the quoted passage
        ``nearest`` the question (not known to answer it), one that shows it."""
        if nearest and turn.lang == "en":
            return f"{NO_VERIFIED_ANSWER_EN} The closest passage, which may not answer it: {nearest}"
        if nearest:
            return f"{NO_VERIFIED_ANSWER_FR} Le passage le plus proche, qui n'y répond peut-être pas : {nearest}"
        titles = "; ".join(d.metadata.get("short_title") or d.title for d in self.index.documents())
        if not turn.question:
            if turn.lang == "en":
                return f"{RULES_REFUSAL_EN} I answer questions on the documents, citing them: {titles}."
            return f"{RULES_REFUSAL_FR} Je réponds aux questions sur les documents, en les citant : {titles}."
        near = list(
            dict.fromkeys(source_label(h.chunk, name_bare_headings=True) for h in turn.hits[:3] if h.chunk.section)
        )
        if turn.lang == "en":
            text = f"{REFUSAL_SENTINEL_EN} I cannot answer this from the documents, which cover: {titles}."
            if near:
                text += " The closest passages deal with: " + "; ".join(near) + "."
            return text
        text = f"{REFUSAL_SENTINEL_FR} Je ne peux pas répondre à partir des documents, qui portent sur : {titles}."
        if near:
            text += " Les passages les plus proches traitent de : " + " ; ".join(near) + "."
        return text
