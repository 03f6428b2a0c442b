"""Shared CLI plumbing: error -> exit-code mapping, consoles, option parsing.

Command modules import only this, typer and rich at import time; anything heavy
(torch, lerobot, onnxruntime) is imported inside the command body so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperOption

from policy_export.enums import ImageFormat
from policy_export.errors import EXIT_BAD_INPUT, PolicyExportError, embedded_os_error, os_error_message
from policy_export.signals import Terminated, signals_as_interrupt

if TYPE_CHECKING:
    from rich.status import Status

    from policy_export.checkpoint import LoadedCheckpoint

F = TypeVar("F", bound=Callable[..., Any])

# Wide when not a terminal, so CI logs keep the report table on one line per row.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 180)

CheckpointOpt = Annotated[
    Path,
    typer.Option(
        "--checkpoint",
        "-c",
        help="LeRobot 'pretrained_model' directory (config.json, model.safetensors, processors).",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
ImageFormatOpt = Annotated[
    ImageFormat,
    typer.Option(
        "--image-format", help="float32: [B,3,H,W] in [0,1]. uint8: raw camera frames [B,H,W,3], scaled in-graph."
    ),
]


_debug_flag = False

#: Old spellings still accepted (hidden from help) -> the one name of that thing in every command.
OPTION_ALIASES = {"--name": "--model", "--url": "--triton-url"}


class _Option(TyperOption):
    """Help names what an option takes: nothing beside a flag (Typer printed ``<bool>``), and one
    element of a repeatable option (``<path>``, where Typer printed ``<list[Path]>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        shown = super().display_type_rich(ctx)
        if shown is not None and shown.startswith("<list[") and shown.endswith("]>"):
            element = shown[len("<list[") : -len("]>")]
            return "<path>" if element in ("Path", "PosixPath") else f"<{element}>"
        return shown


def _set_debug_if_given(value: bool) -> None:
    if value:
        set_debug(True)


DebugOpt = Annotated[
    bool,
    typer.Option(
        "--debug",
        expose_value=False,
        callback=_set_debug_if_given,
        help="Show full tracebacks (also accepted before the command; or POLICY_EXPORT_DEBUG=1).",
    ),
]


def _debug_probe(debug: DebugOpt = False) -> None:
    """Never run: Typer builds ``--debug`` from this signature, so it renders like every other option."""


def _debug_option() -> TyperOption:
    probe = typer.Typer(add_completion=False)
    probe.command()(_debug_probe)
    (param,) = typer.main.get_command(probe).params
    assert isinstance(param, TyperOption)
    return param


class Command(TyperCommand):
    """Every subcommand's class: the help fixes above, ``--debug`` accepted after the subcommand as well
    as before it, and the hidden old option names of :data:`OPTION_ALIASES`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())
        for param in self.params:
            if type(param) is TyperOption:
                param.__class__ = _Option  # same fields, only the help rendering differs

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if type(option) is TyperOption:
            option.__class__ = _Option
        return option

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        own = {opt for param in self.params for opt in getattr(param, "opts", ())}
        renamed = []
        for i, arg in enumerate(args):
            if arg == "--":
                renamed += args[i:]
                break
            head, eq, value = arg.partition("=")
            canonical = OPTION_ALIASES.get(head)
            renamed.append(
                canonical + eq + value if canonical is not None and canonical in own and head not in own else arg
            )
        return super().parse_args(ctx, renamed)


def set_debug(value: bool) -> None:
    global _debug_flag
    _debug_flag = value


def debug_enabled() -> bool:
    return _debug_flag or os.environ.get("POLICY_EXPORT_DEBUG", "") not in ("", "0", "false")


def handle_errors[F: Callable[..., Any]](fn: F) -> F:
    """Turn PolicyExportError into one red line and its exit code (traceback with --debug);
    SIGINT and SIGTERM into cleanup and exit 128 + the signal number (130, 143), as shells report them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_as_interrupt():
                return fn(*args, **kwargs)
        except PolicyExportError as exc:
            if debug_enabled():
                raise
            # Escaped: messages quote paths and pip extras ('policy-export[bench]') that Rich would eat as markup.
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a full disk, a read-only mount, EMFILE...: the environment, exit 2 as bad input
            if debug_enabled():
                raise
            err_console.print(f"[bold red]error:[/] {escape(os_error_message(exc))}", soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except Exception as exc:  # another library's wrapper around an OSError (safetensors' SafetensorError)
            os_exc = embedded_os_error(exc)
            if os_exc is None or debug_enabled():
                raise
            err_console.print(f"[bold red]error:[/] {escape(os_error_message(os_exc))}", soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            err_console.print(
                f"[bold red]interrupted[/] ({signal.Signals(signum).name}): nothing half-written was left behind "
                "(finished outputs are kept)"
            )
            raise typer.Exit(128 + signum) from None

    return wrapper  # type: ignore[return-value]


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, e.g. 1,4") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{option} takes positive integers, e.g. 1,4")
    return values


def status(message: str) -> Status:
    """A spinner on stderr (quiet when not a terminal)."""
    return err_console.status(message, spinner="dots")


def load(checkpoint: Path) -> LoadedCheckpoint:
    from policy_export.checkpoint import load_checkpoint

    with status(f"loading checkpoint {checkpoint}"):
        return load_checkpoint(checkpoint)


def exit_with(code: int) -> None:
    if code:
        raise typer.Exit(code)
