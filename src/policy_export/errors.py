"""Error types that map onto the CLI's documented exit codes.

Exit codes: 0 everything passed, 1 a parity check failed, 2 bad usage or bad input.
Anything raised as a :class:`PolicyExportError` is shown as one line (no traceback)
because it describes the user's input, not a bug in this tool.
"""

from __future__ import annotations

from policy_export.enums import Status

EXIT_OK = 0
EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2


def exit_status(code: int) -> Status:
    """The word a report prints beside its exit code: passed (0), failed (1), incomplete (anything else)."""
    return {EXIT_OK: Status.PASSED, EXIT_PARITY_FAILED: Status.FAILED}.get(code, Status.INCOMPLETE)


def first_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``: third-party errors often carry pages of context,
    and the CLI's contract is one line (``--debug`` shows the rest)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class PolicyExportError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(PolicyExportError):
    """Missing/partial/corrupt inputs, or an invalid combination of options."""


class UnavailableError(PolicyExportError):
    """A backend this command needs (GPU, TensorRT, a server) is not available here."""


class ParityError(PolicyExportError):
    """An exported artifact disagreed with the reference beyond tolerance."""

    exit_code = EXIT_PARITY_FAILED
