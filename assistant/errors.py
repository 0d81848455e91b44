"""Errors a user can act on, and their one-line French message (never a traceback)."""

from __future__ import annotations

from assistant.index import IndexBusyError, IndexMissingError
from assistant.ingest import IngestError
from assistant.vectorstore import StoreUnavailableError


class InvalidQuestionError(ValueError):
    """An empty, too long or otherwise unusable question."""


class BackendUnavailableError(RuntimeError):
    """The configured LLM backend cannot be reached or loaded."""


UserFacingError = (
    IndexBusyError,
    IndexMissingError,
    IngestError,
    StoreUnavailableError,
    InvalidQuestionError,
    BackendUnavailableError,
    FileNotFoundError,
)
