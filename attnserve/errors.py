"""One error tree for the whole project.

`UserInputError` is for things a caller got wrong (a name, a shape, a file); `RuntimeFailure` for
things that went wrong while doing correct work (an exporter crashed, a server did not start). The CLI
prints either as one line and exits non-zero; only unexpected exceptions produce a traceback.
Messages say what was expected and what arrived.
"""

from __future__ import annotations


class AttnserveError(Exception):
    """Base of every error this project raises on purpose."""


class UserInputError(AttnserveError):
    """The caller asked for something invalid (unknown name, wrong shape, bad file)."""


class UnknownModelError(UserInputError):
    """A model name that is not registered / not in the repository."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known) or '(none)'}")


class UnknownRuntimeError(UserInputError):
    """A CPU runtime name that no runtime module implements."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown runtime {name!r}; known runtimes: {', '.join(self.known)}")


class ShapeError(UserInputError):
    """A tensor whose shape is not the one expected."""


class DTypeError(UserInputError):
    """A tensor whose dtype is not the one expected."""


class DataError(UserInputError):
    """A dataset folder, image or video that cannot be read."""


class RuntimeFailure(AttnserveError):
    """Correct work that failed while running."""


class ExportError(RuntimeFailure):
    """A conversion stage (torch->ONNX, ONNX->TensorRT, ...) failed."""


class ParityError(ExportError):
    """A converted artefact's outputs differ from its source beyond tolerance."""


class ServerError(RuntimeFailure):
    """The Triton server could not be started, became unready, or failed to stop."""


class WorkerError(RuntimeFailure):
    """A worker process (e.g. a load-test worker) failed while doing correct work; its traceback is logged."""


class InferenceError(AttnserveError):
    """A request to the server failed; keeps Triton's status (e.g. 'StatusCode.INVALID_ARGUMENT', '400')."""

    def __init__(self, message: str, status: str | None = None, model: str | None = None) -> None:
        self.status = status
        self.model = model
        self.detail = message
        """The message without the `[status]` prefix (for wrapping it in another error without repeating it)."""
        prefix = f"[{status}] " if status else ""
        super().__init__(f"{prefix}{message}")


def validation_summary(error: Exception) -> str:
    """One line from a pydantic `ValidationError`: each failing field and what it expected, never the values given
    (a secret such as a key or token must not reach a terminal or a log).

    Args:
        error: the `ValidationError` (anything with pydantic's `errors()`; other exceptions: their text).
    """
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
    parts = []
    for item in errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in item.get("loc", ()))
        text = str(item.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts)
