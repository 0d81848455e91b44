"""LLM backends behind one small protocol: stream text for a list of chat messages.

- ``local``: the bundled Qwen2.5 1.5B GGUF through llama-cpp-python, loaded once per
  process; llama.cpp reuses the KV cache of the common prompt prefix (system prompt and
  few-shot examples), so only the sources and the question are read for each turn. That
  prefix is read when the model loads, from a state saved on disk by an earlier process.
- ``openai``: any OpenAI-compatible server (vLLM, llama.cpp server, Mistral…) via LangChain.
- ``ollama``: an Ollama server via LangChain.
The extractive backend needs no LLM at all and lives in ``generate``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

import numpy as np

from assistant.errors import BackendUnavailableError
from assistant.files import replacing
from assistant.settings import Settings


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


class ChatLLM(Protocol):
    name: str

    def stream(self, messages: list[Message], *, max_tokens: int, stop: list[str] | None = None) -> Iterator[str]: ...


@dataclass(frozen=True)
class RefusalWeight:
    """How much the model leans toward opening its reply with a refusal."""

    probability: float  # of a reply opening with one of the refusals (their first two tokens)
    preferred: bool  # greedy decoding would open with one


@runtime_checkable
class WeighsRefusal(Protocol):
    """A backend that reads its own next-token probabilities (the local model).

    Greedy decoding takes the refusal whenever its first token is the single most likely
    one, although the answers, spread over many first tokens, may weigh more together. Such a
    backend says how likely its refusal is, and gives its most likely reply that is not one.
    """

    def weigh_refusal(self, messages: list[Message], refusals: Sequence[str]) -> RefusalWeight: ...

    def stream_avoiding(
        self, messages: list[Message], refusals: Sequence[str], *, max_tokens: int, stop: list[str] | None = None
    ) -> Iterator[str]: ...


@dataclass(frozen=True)
class Warmup:
    """The constant prompt prefix read ahead of the first question, and what it cost."""

    tokens: int
    seconds: float
    # a saved state, evaluated now, already in context, or nothing to read (no chat template)
    origin: Literal["disk", "computed", "memory", "none"]


@runtime_checkable
class KeepsPrefix(Protocol):
    """A backend that can read the prompt prefix every question shares before the first one.

    The local model would read the system rules and few-shot examples (~400 tokens, 9–13 s on
    this 2-core machine) at the first question of each process; llama.cpp then reuses them.
    Reading them at load time, from a state saved by an earlier process when there is one
    (~0.4 s), spares that delay to ``assistant ask``, to the first visitor of the web app and
    to the first question of every eval run.
    """

    def warm_prefix(self, variants: Sequence[list[Message]], state_dir: Path | None = None) -> Warmup: ...


log = logging.getLogger(__name__)

# log-probabilities of a reply's first token; per refusal's first token, those of the next token
# and the refusals' second tokens
_Paths = tuple[np.ndarray, dict[int, tuple[np.ndarray, set[int]]]]


def _share(logprobs: np.ndarray, tokens: set[int]) -> float:
    """The probability the log-probabilities give to any of ``tokens``."""
    return sum(math.exp(logprobs[t]) for t in tokens)


def _compact(state: Any) -> Any:
    """Keep one row of a saved state's logits (``Llama.load_state`` broadcasts it back).

    A restored state is always evaluated again before sampling (``_requires_eval``), so the
    saved logits are never read; llama-cpp-python copies the whole buffer (311 MB here)."""
    state.scores = state.scores[-1:].copy()
    return state


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
            super().__setitem__(key, _compact(value))

    return CompactStateCache(capacity_bytes=capacity_bytes)


_BUILD_FEATURES = {"AVX512": "avx512f", "AVX512_VNNI": "avx512_vnni", "AVX2": "avx2"}


def missing_cpu_features(system_info: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The instruction sets llama.cpp was built for that this CPU lacks ("" when it fits).

    ``scripts/setup.sh`` builds for AVX-512 where the CPU has it; the same venv on another CPU
    would die with SIGILL mid-answer, so it is refused up front with a way out.
    """
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:  # not Linux: nothing to compare with
        return ""
    if not flags:
        return ""
    have = set(flags.split(":", 1)[-1].split())
    return ", ".join(name for name in _built_features(system_info) if _BUILD_FEATURES[name] not in have)


def _built_features(system_info: str) -> list[str]:
    """The instruction sets of ``_BUILD_FEATURES`` that llama.cpp's system info reports as built in."""
    return [name for name in _BUILD_FEATURES if f" {name} = 1 " in f" {system_info} "]


def llama_build() -> tuple[str, str]:
    """The installed llama.cpp build's instruction sets ("AVX2 + AVX512 + AVX512_VNNI"), and what
    of them this CPU lacks ("" when it can run it), without loading a model."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return " + ".join(sorted(_built_features(info))) or "generic", missing_cpu_features(info)


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
        _, missing = llama_build()
        if missing:
            raise BackendUnavailableError(
                f"llama-cpp-python a été compilé pour {missing}, que ce processeur n'a pas (il planterait). "
                "Relancez `scripts/setup.sh` (ou `make setup`) : il le recompile pour ce processeur."
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
        self._model_path = Path(model_path)
        self._temperature = temperature
        self.name = f"local:{Path(model_path).stem}"
        self._formatter = self._chat_formatter()
        self._last_paths: tuple[tuple[tuple[int, ...], tuple[str, ...]], _Paths] | None = None

    def _chat_formatter(self) -> Any:
        """The GGUF's own chat template, as ``create_chat_completion`` applies it (None without one)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None

        def text(token: int) -> str:
            return self._llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        return Jinja2ChatFormatter(
            template=template, eos_token=text(self._llama.token_eos()), bos_token=text(self._llama.token_bos())
        )

    def stream(self, messages: list[Message], *, max_tokens: int, stop: list[str] | None = None) -> Iterator[str]:
        with self._lock:
            chunks = self._llama.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                **self._decoding(max_tokens, stop),
            )
            for chunk in chunks:
                delta = chunk["choices"][0].get("delta", {})  # type: ignore[index]
                text = delta.get("content")
                if text:
                    yield text

    def _decoding(self, max_tokens: int, stop: list[str] | None) -> dict[str, Any]:
        """One decoding policy for every streamed reply (a forced opening continues the same way)."""
        return {
            "max_tokens": max_tokens,
            "temperature": self._temperature,
            "top_k": 1,
            "repeat_penalty": 1.05,
            "stop": stop or [],
            "stream": True,
        }

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False))

    # ---------------------------------------------------------------- prompt prefix
    def warm_prefix(self, variants: Sequence[list[Message]], state_dir: Path | None = None) -> Warmup:
        """Read the tokens all ``variants`` start with into the context (see ``KeepsPrefix``).

        The state is saved under ``state_dir`` (~12 MB) and read back by later processes; its
        name hashes the tokens, the model file and the llama.cpp build, so a changed prompt or
        model never loads a stale state, and an unreadable one is evaluated again.
        """
        started = time.perf_counter()
        if self._formatter is None:  # no chat template: the prompt's tokens are not known here
            return Warmup(0, 0.0, "none")
        with self._lock:
            prefix = _common_prefix([self._prompt_tokens(list(v)) for v in variants])
            llama = self._llama
            if not prefix:
                return Warmup(0, 0.0, "none")
            if llama.n_tokens >= len(prefix) and llama.input_ids[: len(prefix)].tolist() == prefix:
                return Warmup(len(prefix), time.perf_counter() - started, "memory")
            path = state_dir / f"prefix-{self._state_key(prefix)}.npz" if state_dir else None
            state = _read_state(path, prefix, llama.n_ctx()) if path else None
            origin: Literal["disk", "computed"] = "disk"
            if state is not None:
                try:
                    llama.load_state(state)
                except Exception as exc:  # written by another llama.cpp build despite the key
                    log.warning("État du préfixe illisible (%s) : %s ; il est recalculé", path, exc)
                    state = None
            if state is None:
                origin = "computed"
                llama.reset()
                llama.eval(prefix)
                state = _compact(llama.save_state())
                if path is not None:
                    _write_state(path, state, prefix)
            if llama.cache is not None:  # a translation prompt may evict it from the context later
                llama.cache[prefix] = state
        warmup = Warmup(len(prefix), time.perf_counter() - started, origin)
        log.info("Préfixe du prompt : %d jetons (%s) en %.2f s", warmup.tokens, origin, warmup.seconds)
        return warmup

    def _state_key(self, prefix: list[int]) -> str:
        import llama_cpp

        digest = hashlib.sha256()
        stat = self._model_path.stat()
        # the build's instruction set too: AVX2 and AVX-512 kernels round differently, and a state
        # read by one build would make the other's answers depend on which process saved it
        build = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
        head = f"{self._model_path.name}|{stat.st_size}|{llama_cpp.__version__}|{build}|{self._llama.n_ctx()}|"
        digest.update(head.encode("utf-8"))
        digest.update(np.asarray(prefix, dtype=np.int32).tobytes())
        return digest.hexdigest()[:24]

    # ---------------------------------------------------------------- refusal weighing
    def weigh_refusal(self, messages: list[Message], refusals: Sequence[str]) -> RefusalWeight:
        if self._formatter is None:
            return RefusalWeight(0.0, False)
        with self._lock:
            first, seconds = self._refusal_paths(self._prompt_tokens(messages), refusals)
        probability = sum(math.exp(first[r0]) * _share(second, r1s) for r0, (second, r1s) in seconds.items())
        top = int(np.argmax(first))
        preferred = top in seconds and int(np.argmax(seconds[top][0])) in seconds[top][1]
        return RefusalWeight(min(probability, 1.0), preferred)

    def stream_avoiding(
        self, messages: list[Message], refusals: Sequence[str], *, max_tokens: int, stop: list[str] | None = None
    ) -> Iterator[str]:
        if self._formatter is None:
            yield from self.stream(messages, max_tokens=max_tokens, stop=stop)
            return
        with self._lock:
            prompt = self._prompt_tokens(messages)
            first, seconds = self._refusal_paths(prompt, refusals)
            # greedy over the replies that do not open with a refusal: a refusal's first token
            # keeps only the probability of its other continuations
            adjusted = first.copy()
            for r0, (second, r1s) in seconds.items():
                adjusted[r0] += math.log(max(1.0 - _share(second, r1s), 1e-12))
            forced = [int(np.argmax(adjusted))]
            if forced[0] in seconds:
                second, r1s = seconds[forced[0]]
                second = second.copy()
                second[list(r1s)] = -np.inf
                forced.append(int(np.argmax(second)))
            try:
                opening = self._llama.detokenize(forced).decode("utf-8")
            except UnicodeDecodeError:  # a character split across tokens: give up the forcing
                opening = None
        if opening is None:
            yield from self.stream(messages, max_tokens=max_tokens, stop=stop)
            return
        with self._lock:
            yield opening
            chunks = self._llama.create_completion(
                prompt + forced, **self._decoding(max(max_tokens - len(forced), 1), stop)
            )
            for chunk in chunks:
                text = chunk["choices"][0]["text"]  # type: ignore[index]
                if text:
                    yield text

    def _prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The prompt's tokens as ``create_chat_completion`` builds them."""
        result = self._formatter(messages=list(messages))
        return self._llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    def _refusal_paths(self, prompt: list[int], refusals: Sequence[str]) -> _Paths:
        """Log-probabilities of the reply's first token; for each refusal's first token, those of
        the token after it, with the refusals' second tokens. Call with the lock held.

        The chain weighs a prompt, then may stream its likeliest non-refusal from it: the paths of
        the last prompt are kept, so that the second call does not read and save its state again."""
        key = (tuple(prompt), tuple(refusals))
        if self._last_paths is not None and self._last_paths[0] == key:
            return self._last_paths[1]
        # one sampled token through create_completion, which restores the longest cached prompt
        # state; the context then holds the prompt, and its logits those of the token after it
        self._llama.create_completion(prompt, max_tokens=1, temperature=0.0, top_k=1)
        first = self._next_logprobs()
        paths: dict[int, set[int]] = {}
        for refusal in refusals:
            ids = self._llama.tokenize(refusal.encode("utf-8"), add_bos=False, special=False)[:2]
            if len(ids) == 2:
                paths.setdefault(ids[0], set()).add(ids[1])
        seconds: dict[int, tuple[np.ndarray, set[int]]] = {}
        for r0, r1s in paths.items():
            self._llama.n_tokens = len(prompt)  # back to the prompt alone
            self._llama.eval([r0])
            seconds[r0] = (self._next_logprobs(), r1s)
        self._last_paths = (key, (first, seconds))
        return first, seconds

    def _next_logprobs(self) -> np.ndarray:
        """Log-probabilities of the token after the last one evaluated."""
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._llama.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._llama.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        return logits - math.log(float(np.exp(logits).sum()))


def _common_prefix(sequences: Sequence[list[int]]) -> list[int]:
    """The longest token list every sequence starts with."""
    if not sequences:
        return []
    first = sequences[0]
    length = len(first)
    for other in sequences[1:]:
        length = min(length, len(other))
        length = next((i for i in range(length) if first[i] != other[i]), length)
    return first[:length]


_KEPT_STATES = 4  # prompt prefix states kept on disk (one per prompt version and model)


def _write_state(path: Path, state: Any, prefix: list[int]) -> None:
    """Save a prefix state atomically; keep only the most recent few. A failure only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, binary=True) as fh:
            np.savez(
                fh,
                tokens=np.asarray(prefix, dtype=np.int32),
                scores=np.asarray(state.scores[-1:], dtype=np.float32),  # the file holds one row
                llama_state=np.frombuffer(state.llama_state, dtype=np.uint8),
                seed=np.asarray(state.seed, dtype=np.int64),
            )
        saved = sorted(path.parent.glob("prefix-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in saved[_KEPT_STATES:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("État du préfixe non enregistré (%s) : %s", path, exc)


def _read_state(path: Path, prefix: list[int], n_ctx: int) -> Any | None:
    """A saved prefix state for exactly these tokens, or None (absent or unreadable)."""
    from llama_cpp import LlamaState

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            tokens = saved["tokens"].tolist()
            if tokens != prefix:
                return None
            input_ids = np.zeros(n_ctx, dtype=np.intc)
            input_ids[: len(tokens)] = tokens
            llama_state = saved["llama_state"].tobytes()
            return LlamaState(
                input_ids=input_ids,
                scores=saved["scores"].astype(np.single),
                n_tokens=len(tokens),
                llama_state=llama_state,
                llama_state_size=len(llama_state),
                seed=int(saved["seed"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated, foreign
        log.warning("État du préfixe illisible (%s) : %s ; il est recalculé", path, exc)
        return None


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
