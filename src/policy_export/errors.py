"""Error types that map onto the CLI's documented exit codes.

Exit codes: 0 everything passed, 1 a parity check failed, 2 bad usage or bad input.
Anything raised as a :class:`PolicyExportError` is shown as one line (no traceback)
because it describes the user's input, not a bug in this tool.
"""

from __future__ import annotations

import errno
import os
import re

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


#: What an OSError means for the user, and the fix, by errno (anything else: its own strerror).
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EFBIG: ("file too large for this file system", "write to another disk"),
    errno.EROFS: ("read-only file system", "write to a writable folder"),
    errno.EACCES: ("permission denied", "fix the permissions or use another folder"),
    errno.EPERM: ("operation not permitted", "fix the permissions or use another folder"),
    errno.EMFILE: ("too many open files in this process", "raise the limit (ulimit -n) and run again"),
    errno.ENFILE: ("too many open files on this system", "close other programs and run again"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    errno.EIO: ("input/output error", "check the disk (dmesg) and run again"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is not a folder", "check the path"),
    errno.EISDIR: ("is a folder", "give a file path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the path"),
    errno.EXDEV: ("crosses file systems", "keep the output on one file system"),
    errno.EBUSY: ("busy", "stop what uses it and run again"),
}


def os_error_message(exc: OSError, path: object = None) -> str:
    """One line for an OSError: the path, what happened and the fix.

    A full disk or a read-only mount is the user's environment, not a parity failure (exit 1)
    nor a bug (a traceback). ``path`` names the file when the error itself does not (a write
    on an open file reports no name).
    """
    where = exc.filename if exc.filename is not None else path
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what, fix = _OS_ERRORS.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and the disk"))
    code = f"errno {errno.errorcode.get(exc.errno, exc.errno)}" if exc.errno else type(exc).__name__
    return f"{where if where is not None else 'a file'}: {what} ({code}); {fix}"


_EMBEDDED_ERRNO = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def embedded_os_error(exc: BaseException) -> OSError | None:
    """The OSError inside another library's exception, if there is one.

    safetensors (Rust) raises ``SafetensorError: ... No space left on device (os error 28)``,
    and others wrap an OSError as their cause: all of them are a full disk or a read-only
    mount to the user, never a bug to show a traceback for.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):
            return cur
        m = _EMBEDDED_ERRNO.search(str(cur))
        if m:
            code = int(m.group(1) or m.group(2))
            return OSError(code, os.strerror(code))
        cur = cur.__cause__ or cur.__context__
    return None


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
