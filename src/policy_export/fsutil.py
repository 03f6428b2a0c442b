"""Atomic, no-clobber output files.

Exports take minutes and can be interrupted; a half-written model file that looks valid
is worse than none. Everything is written to a temporary sibling and renamed into place
only once complete, and existing user artifacts are never replaced without ``--force``.

Inputs are never outputs: every writer passes what it read (a checkpoint folder, the
artifacts under test) and a path that resolves to one of them, or into an input folder,
is refused even with ``--force``. ``--force`` is for replacing our own earlier output;
it was never meant to let ``--report`` land on ``model.safetensors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from policy_export.errors import BadInputError, embedded_os_error

#: Bounds the walk of an input folder (a checkpoint has a dozen files); a huge folder is not a checkpoint.
_MAX_INPUT_FILES = 10_000


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _stat(path: Path | str) -> os.stat_result | None:
    try:
        return os.stat(path)  # follows symlinks: a link to an input is that input
    except OSError:
        return None


def _input_files(folder: Path) -> Iterator[Path]:
    for n, p in enumerate(folder.rglob("*")):
        if n >= _MAX_INPUT_FILES:
            return
        yield p


def input_conflict(path: Path, inputs: Iterable[Path | str]) -> str | None:
    """Why writing ``path`` would touch an input (None when it would not).

    Compared by resolved path *and* by device/inode, so a symlink, a hard link, a bind
    mount or ``..`` in either path cannot disguise an input. An input folder (a checkpoint)
    protects everything under it and every file its entries point to (hub caches link
    ``model.safetensors`` to a blob elsewhere).
    """
    target = Path(os.path.realpath(path))
    out_stat = _stat(path)
    # The output's existing ancestors, by inode: containment that survives bind mounts and odd spellings.
    ancestors = [st for st in (_stat(a) for a in [target, *target.parents]) if st is not None]
    for item in inputs:
        inp = Path(item)
        real = Path(os.path.realpath(inp))
        in_stat = _stat(inp)
        if in_stat is None:
            continue
        if inp.is_dir():
            if any(_same_file(st, in_stat) for st in ancestors):
                return f"is inside the input folder {inp}"
            for f in _input_files(inp):
                f_stat = _stat(f)
                if f_stat is None or not f.is_file():
                    continue
                if Path(os.path.realpath(f)) == target or (out_stat is not None and _same_file(out_stat, f_stat)):
                    return f"is the input file {f}"
        elif real == target or (out_stat is not None and _same_file(out_stat, in_stat)):
            return f"is the input file {inp}"
    return None


def refuse_inputs(path: Path, inputs: Iterable[Path | str], what: str = "output") -> None:
    """Raise if ``path`` is (or lies inside) an input; ``--force`` does not change this."""
    conflict = input_conflict(path, inputs)
    if conflict:
        raise BadInputError(
            f"{path}: the {what} {conflict}; inputs are never overwritten (not even with --force): "
            "write it somewhere else"
        )


def check_writable(path: Path, force: bool, what: str = "output", inputs: Iterable[Path | str] = ()) -> None:
    """Refuse to clobber an input ever, or an existing file unless ``force``; create missing parent folders.

    Creating the parent is what CI users expect (``--output artifacts/policy.onnx`` on a
    clean checkout); an empty folder is not a half-written artifact.
    """
    refuse_inputs(path, inputs, what)
    if path.exists() and path.is_dir():
        raise BadInputError(f"{path}: {what} is a directory; give a file path")
    if path.exists() and not force:
        raise BadInputError(f"{path}: {what} already exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from exc
    if not os.access(path.parent, os.W_OK):
        if _read_only(path.parent):
            raise BadInputError(f"{path.parent}: read-only file system; write the {what} to a writable folder")
        raise BadInputError(f"{path.parent}: no permission to write the {what} here; choose another folder")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _name_output(exc: OSError, tmp: Path, path: Path) -> None:
    """Make an OSError raised while writing ``tmp`` name ``path``, the file the user asked for.

    A failed ``write`` reports no file name at all, and the hidden temp name means nothing to
    the user; the CLI prints the error as one line (:func:`policy_export.errors.os_error_message`).
    """
    for attr in ("filename", "filename2"):
        name = getattr(exc, attr)
        if name is not None and Path(os.fsdecode(name)).is_relative_to(tmp):
            setattr(exc, attr, str(path / Path(os.fsdecode(name)).relative_to(tmp)))
    if exc.filename is None:
        exc.filename = str(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, mode: int) -> None:
    """Give a temp file/folder the mode a plain ``open``/``mkdir`` would have.

    ``mkstemp``/``mkdtemp`` create 0600/0700 entries; renamed into place as they are, an
    exported model would be unreadable to a CI job or a Triton container running as
    another user.
    """
    os.chmod(tmp, mode & ~_umask())


# Top-level keys that identify each JSON report this tool writes (verify, export, bench, bench-shim).
_REPORT_KEYS = (
    frozenset({"checkpoint", "checks", "exit_code"}),
    frozenset({"checkpoint", "out_dir", "formats", "steps", "exit_code"}),
    frozenset({"schema", "command", "settings", "results", "skipped"}),
    frozenset({"schema", "benchmark", "rows"}),
)
#: Written into the plots and JUnit files we make, so a later run can recognise them.
REPORT_MARK = "policy-export"
_MAX_REPORT_BYTES = 256 << 20


def is_our_report(path: Path) -> bool:
    """True when ``path`` holds a report this tool wrote (JSON, JUnit XML or a bench plot).

    Reports are rewritten on every run, so overwriting our own is expected; anything else at
    that path is somebody's file and needs ``--force``.
    """
    try:
        if not path.is_file() or path.stat().st_size > _MAX_REPORT_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    if data.startswith(b"\x89PNG"):
        return f"Software\x00{REPORT_MARK}".encode() in data[:4096]
    head = data.lstrip()[:512]
    if head.startswith(b"<?xml") or head.startswith(b"<testsuites"):
        return f'<testsuites name="{REPORT_MARK} verify"'.encode() in head
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and any(keys <= doc.keys() for keys in _REPORT_KEYS)


def check_report_writable(path: Path, force: bool, what: str = "report", inputs: Iterable[Path | str] = ()) -> None:
    """Reports: never an input; an existing file only if it is one of our reports, or with ``force``."""
    check_writable(path, True, what, inputs)
    if path.exists() and not force and not is_our_report(path):
        raise BadInputError(
            f"{path}: exists and is not a policy-export report; pass --force to overwrite it, or choose another path"
        )


@contextlib.contextmanager
def atomic_output(path: Path, force: bool, what: str = "output", inputs: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a temp path in the same directory; rename it over ``path`` on success."""
    check_writable(path, force, what, inputs)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:  # e.g. a read-only mount, which os.access does not always see
        raise BadInputError(
            f"{path.parent}: cannot write the {what} here ({exc.strerror}); choose another folder"
        ) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish(tmp, 0o666)
        os.replace(tmp, path)
    except OSError as exc:
        _name_output(exc, tmp, path)
        raise
    except Exception as exc:
        os_exc = embedded_os_error(exc)
        if os_exc is None:
            raise
        _name_output(os_exc, tmp, path)
        raise os_exc from exc
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: Path, staging_root: Path | None = None) -> Iterator[Path]:
    """Yield an empty temp folder; on normal exit swap it in for ``path`` (which may exist).

    The temp folder (``.<name>.*.partial``) and the displaced original (``.<name>.*.old``)
    live in ``staging_root`` (default: beside ``path``), which must be on the same
    filesystem so both renames are atomic. If the second rename fails, the original is put
    back: an interrupted or failed write leaves ``path`` exactly as it was. A writer killed
    outright (SIGKILL) runs none of this: :func:`remove_stale_staging` cleans up after it.
    """
    root = staging_root or path.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"{root}: cannot create the output folder ({exc.strerror})") from exc
    prefix = _staging_prefix(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=root))
    old: Path | None = None
    try:
        yield tmp
        _publish(tmp, 0o777)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=root))
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as exc:
        _name_output(exc, tmp, path)
        raise
    except Exception as exc:
        os_exc = embedded_os_error(exc)
        if os_exc is None:
            raise
        _name_output(os_exc, tmp, path)
        raise os_exc from exc
    finally:
        if old is not None and not path.exists():
            os.replace(old, path)  # the swap failed half-way: put the original back
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _staging_prefix(path: Path) -> str:
    """``.NAME.TAG.``: the start of every staging folder :func:`atomic_directory` makes for ``path``.

    TAG hashes where ``path`` really is, so two repositories in one folder that both hold a
    model ``act`` (sharing that folder as their staging root) never take each other's staging
    folders for their own.
    """
    where = os.path.join(os.path.realpath(path.parent), path.name)
    return f".{path.name}.{hashlib.sha256(where.encode()).hexdigest()[:8]}."


def _staging_pattern(path: Path) -> re.Pattern[str]:
    """Exactly the names of ``path``'s staging folders (``mkdtemp`` adds 8 random characters), so
    another model whose name starts with this one's (``act`` and ``act.v2``) never matches."""
    return re.compile(rf"{re.escape(_staging_prefix(path))}[a-z0-9_]{{8}}\.(partial|old)")


def remove_stale_staging(
    path: Path, staging_root: Path | None = None, on_remove: Callable[[str], None] | None = None
) -> list[Path]:
    """Clean up after an :func:`atomic_directory` writer of ``path`` that was killed (SIGKILL, power loss).

    Only call it while holding the lock every writer of ``path`` takes: then no staging folder
    of ``path`` belongs to a live writer. A ``.partial`` folder is removed. A ``.old`` folder is
    the original moved aside by a writer killed between its two renames: when ``path`` is gone it
    is put back (the write never happened), otherwise it is removed. Returns what was cleaned.
    """
    root = staging_root or path.parent
    pattern = _staging_pattern(path)
    try:
        stale = sorted(p for p in root.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    olds = [p for p in stale if p.name.endswith(".old")]
    if olds and not path.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, path)
        stale.remove(newest)
        if on_remove is not None:
            on_remove(f"restored {path} from {newest.name}, left by a write that was killed half-way")
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
        if on_remove is not None:
            on_remove(f"removed {p.name}, left by a write to {path.name} that was killed")
    return stale


def write_text_atomic(path: Path, text: str, force: bool = True, inputs: Iterable[Path | str] = ()) -> None:
    with atomic_output(path, force=force, inputs=inputs) as tmp:
        tmp.write_text(text)


def write_report_atomic(
    path: Path, text: str, force: bool = False, inputs: Iterable[Path | str] = (), what: str = "report"
) -> None:
    """A report, under :func:`check_report_writable`'s rule (checked again at write time: minutes have passed)."""
    inputs = tuple(inputs)
    check_report_writable(path, force, what, inputs)
    write_text_atomic(path, text, force=True, inputs=inputs)
