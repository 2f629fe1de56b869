"""The evaluator interface the front calls, and the in-process evaluator (``--workers 0``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from qnprov.errors import ExternalError
from qnprov.policy.engine import Decision, Envelope, PolicyEngine


class EvaluationError(ExternalError):
    """The engine could not give a decision (timeout, crash, no free worker)."""


#: A message as one buffer, or as its pieces in order (header block, blank line,
#: body chunks): the process pool copies the pieces straight into the worker's
#: shared buffer, so the front never joins a large message into a new one.
MessageData = bytes | Sequence[bytes]


def _joined(message: MessageData) -> bytes:
    return message if isinstance(message, bytes) else b"".join(message)


class Evaluator(Protocol):
    version: str
    local_domains: frozenset[str]

    def evaluate(self, message: MessageData, envelope: Envelope) -> Decision: ...

    def reload(self, bundle: Path | None, overrides: Path | None) -> str: ...

    def close(self) -> None: ...



def load_engine(bundle: Path | None, overrides: Path | None) -> PolicyEngine:
    return PolicyEngine.load(bundle, overrides)


class InlineEvaluator:
    """Evaluates in the calling thread (``--workers 0``, tests, the CLI check).

    No timeout can be enforced here; the engine's own limits still apply.
    """

    def __init__(self, bundle: Path | None = None, overrides: Path | None = None) -> None:
        self._engine = load_engine(bundle, overrides)
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self._engine.version

    @property
    def local_domains(self) -> frozenset[str]:
        return self._engine.local_domains

    def evaluate(self, message: MessageData, envelope: Envelope) -> Decision:
        engine = self._engine
        try:
            return engine.evaluate(_joined(message), envelope)
        except Exception as exc:
            raise EvaluationError(f"engine failed: {type(exc).__name__}: {exc}") from exc

    def reload(self, bundle: Path | None, overrides: Path | None) -> str:
        engine = load_engine(bundle, overrides)
        with self._lock:
            self._engine = engine
        return engine.version

    def close(self) -> None:
        return None
