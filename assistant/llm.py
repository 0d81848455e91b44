"""LLM backends behind one small protocol: stream text for a list of chat messages.

- ``local``: the bundled Qwen2.5 1.5B GGUF through llama-cpp-python, loaded once per
  process; llama.cpp reuses the KV cache of the common prompt prefix (system prompt and
  few-shot examples), so only the sources and the question are read for each turn.
- ``openai``: any OpenAI-compatible server (vLLM, llama.cpp server, Mistral…) via LangChain.
- ``ollama``: an Ollama server via LangChain.
The extractive backend needs no LLM at all and lives in ``generate``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypedDict

from assistant.errors import BackendUnavailableError
from assistant.settings import Settings


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class ChatLLM(Protocol):
    name: str

    def stream(self, messages: list[Message], *, max_tokens: int, stop: list[str] | None = None) -> Iterator[str]: ...


def compact_state_cache(capacity_bytes: int) -> object:
    """A llama.cpp RAM cache of prompt states that holds one row of logits per state.

    llama-cpp-python saves each state with its whole logits buffer (n_batch × vocabulary
    floats: 311 MB for Qwen2.5 with n_batch=512) and bounds the cache by the KV bytes alone:
    measured here, an evaluation process grew from 3 to 7 GB. A restored state is always
    evaluated again before sampling (``_requires_eval``), so its saved logits are never read.
    """
    from llama_cpp import LlamaRAMCache

    class CompactStateCache(LlamaRAMCache):
        def __setitem__(self, key, value) -> None:  # type: ignore[no-untyped-def]
            value.scores = value.scores[-1:].copy()  # broadcast back on load; recomputed before use
            super().__setitem__(key, value)

    return CompactStateCache(capacity_bytes=capacity_bytes)


class LlamaCppLLM:
    """In-process llama.cpp; one model, one generation at a time (a lock queues callers)."""

    def __init__(
        self,
        model_path: Path,
        n_ctx: int = 4096,
        n_threads: int = 2,
        temperature: float = 0.0,
        keep_states: bool = False,
    ) -> None:
        from llama_cpp import Llama

        if not Path(model_path).exists():
            raise BackendUnavailableError(
                f"Modèle local absent ({model_path}). Lancez `python -m assistant.models` (ou `make setup`)."
            )
        # rope_freq_base=0 keeps the model's own RoPE base (Qwen: 1e6); n_batch=512 reads
        # the prompt in large batches (the LangChain default of 8 is very slow).
        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=512,
            rope_freq_base=0.0,
            flash_attn=True,  # measured here: prompt reading 73 → 80 tokens/s
            verbose=False,
        )
        if keep_states:
            # keep the KV state of recent prompts: a translation or follow-up rewrite prompt (another
            # system prompt) must not evict the answer prompt's prefix, which costs ~12 s to read again
            self._llama.set_cache(compact_state_cache(256 * 2**20))  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._temperature = temperature
        self.name = f"local:{Path(model_path).stem}"

    def stream(self, messages: list[Message], *, max_tokens: int, stop: list[str] | None = None) -> Iterator[str]:
        with self._lock:
            chunks = self._llama.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=self._temperature,
                top_k=1,
                repeat_penalty=1.05,
                stop=stop or [],
                stream=True,
            )
            for chunk in chunks:
                delta = chunk["choices"][0].get("delta", {})  # type: ignore[index]
                text = delta.get("content")
                if text:
                    yield text

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False))


class LangChainLLM:
    """Any LangChain chat model (ChatOpenAI, ChatOllama…) as a streaming backend."""

    def __init__(self, chat_model: object, name: str) -> None:
        self._model = chat_model
        self.name = name

    def stream(self, messages: list[Message], *, max_tokens: int, stop: list[str] | None = None) -> Iterator[str]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        lc_messages = [kinds[m["role"]](content=m["content"]) for m in messages]
        try:
            for chunk in self._model.stream(lc_messages, stop=stop):  # type: ignore[attr-defined]
                if chunk.content:
                    yield str(chunk.content)
        except Exception as exc:  # network errors differ per client library
            raise BackendUnavailableError(f"Le serveur LLM ({self.name}) ne répond pas : {exc}") from exc


_LOCAL_MODELS: dict[str, LlamaCppLLM] = {}
_LOCAL_LOCK = threading.Lock()


def build_llm(settings: Settings, backend: str | None = None) -> ChatLLM:
    """The LLM for ``backend`` (default: ``settings.backend``); the local model is loaded once per process."""
    backend = backend or settings.backend
    if backend == "local":
        from assistant.models import GGUF_NAME, prepare_llm

        with _LOCAL_LOCK:
            path = settings.models_dir / GGUF_NAME
            key = str(path)
            if key not in _LOCAL_MODELS:
                _LOCAL_MODELS[key] = LlamaCppLLM(
                    prepare_llm(settings.models_dir),
                    settings.n_ctx,
                    settings.n_threads,
                    settings.temperature,
                    # another prompt family (follow-up rewrite, translation) alternates with the answer's
                    keep_states=settings.llm_condense or settings.translate_questions,
                )
            return _LOCAL_MODELS[key]
    if backend == "openai":
        from langchain_openai import ChatOpenAI

        if not settings.llm_url:
            raise BackendUnavailableError(
                "Backend « openai » : indiquez ASSISTANT_LLM_URL (ex. http://127.0.0.1:8080/v1)."
            )
        model = ChatOpenAI(
            base_url=settings.llm_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed",  # type: ignore[arg-type]
            temperature=settings.temperature,
            max_tokens=settings.max_answer_tokens,  # type: ignore[call-arg]
            timeout=120,
            max_retries=1,
        )
        return LangChainLLM(model, f"openai:{settings.llm_model}")
    if backend == "ollama":
        from langchain_ollama import ChatOllama

        model = ChatOllama(
            base_url=settings.ollama_url,
            model=settings.ollama_model,
            temperature=settings.temperature,
            num_predict=settings.max_answer_tokens,
        )
        return LangChainLLM(model, f"ollama:{settings.ollama_model}")
    raise BackendUnavailableError(f"Backend inconnu : {backend} (local, extractive, openai, ollama)")
