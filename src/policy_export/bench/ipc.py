"""Worker IPC: a benchmarked runtime in its own interpreter, driven by request/response messages.

Each runtime runs in a child process (``python -m policy_export.bench.worker``) so that its
imports, thread pools and memory are its own and its load time is measured from a clean
start. Messages are pickled ``(op, args)`` tuples over a socket pair; the worker answers
``("ok", payload)``, ``("error", (class name, message))`` for a user error, or
``("crash", (message, traceback))``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from typing import Any

from policy_export import errors
from policy_export.bench.worker import thread_env
from policy_export.errors import PolicyExportError


class WorkerCrashed(PolicyExportError):
    """A worker process died or raised something that is not a user error."""


class WorkerProcess:
    """A backend in its own interpreter, driven by request/response messages."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        parent, child = socket.socketpair()
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, **thread_env(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "policy_export.bench.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        child.close()
        self.conn = Connection(parent.detach())

    def call(self, op: str, **args: object) -> Any:  # Any: the op's JSON-like answer
        try:
            self.conn.send((op, args))
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            raise WorkerCrashed(f"{self.name}: worker process exited with code {code}{self._log_tail()}") from None
        if status == "ok":
            return payload
        if status == "error":
            cls_name, message = payload
            cls = getattr(errors, cls_name, None)
            if not (isinstance(cls, type) and issubclass(cls, PolicyExportError)):
                cls = PolicyExportError
            raise cls(message)
        message, tb = payload
        crash = WorkerCrashed(f"{self.name}: worker failed: {message.splitlines()[0]} (--debug shows its traceback)")
        crash.add_note(f"traceback in the {self.name} worker:\n{tb}")
        raise crash

    def _log_tail(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return f"; last output: {lines[-1]}" if lines else ""

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("close")
            self.proc.wait(timeout=30)
        except (PolicyExportError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.conn.close()
            self.log.close()
