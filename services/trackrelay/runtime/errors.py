"""One clear line for a failure, with no traceback, no SQL and no password in it.

Commands print ``describe(exc)`` and exit non-zero when startup fails; the full
traceback is logged only at ``--log-level DEBUG``.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from trackrelay.runtime.redact import redact_text


class StartupError(RuntimeError):
    """A dependency a command needs at start is missing or refuses; the message says which."""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through exception groups and SQLAlchemy's DBAPI wrappers."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(exc, DBAPIError) and exc.orig is not None:
            exc = exc.orig
        elif exc.__cause__ is not None and isinstance(exc, SQLAlchemyError):
            exc = exc.__cause__
        else:
            return exc


def _from_redis(exc: BaseException) -> bool:
    """A redis-py error, known by its module so that runtime/ need not import ``redis``."""
    return any(c.__module__.split(".")[0] == "redis" for c in type(exc).__mro__)


def describe(exc: BaseException, *urls: str | None) -> str:
    """``exc`` as one line; the passwords of ``urls`` masked."""
    if isinstance(exc, StartupError):
        return redact_text(_first_line(str(exc)), *urls)
    cause = root_cause(exc)
    what = ""
    if isinstance(exc, SQLAlchemyError):
        what = "order database: "
    elif _from_redis(exc):
        what = "queue redis: "
    text = _first_line(str(cause)) or "(no message)"
    if isinstance(exc, SQLAlchemyError) and not isinstance(cause, OSError):
        text = text[:200]  # driver messages may quote SQL or values: the first words only
    return redact_text(f"{what}{type(cause).__name__}: {text}", *urls)


def brief(exc: BaseException) -> str:
    """For a log line while running: database errors by class only (their text can quote
    SQL and customer data), anything else by class and first line."""
    if isinstance(exc, SQLAlchemyError):
        return type(root_cause(exc)).__name__
    return f"{type(exc).__name__}: {_first_line(str(exc))}"
