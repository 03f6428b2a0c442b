"""``policy-export serve`` as a real subprocess, for tests about signals, metrics and replicas.

Unlike ``triton_harness`` (an in-process ``TritonServer``), this runs the user command itself,
so what a supervisor sees is what is tested: the ready line, the process tree, the temp folder
and what a signal leaves behind. Loopback only; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from triton_harness import SERVER_VENV, require_server

from policy_export.triton.server import die_with_parent, free_ports

READY_TIMEOUT_S = 120.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (tritonserver runs in its own session, so
    process-group tools do not find it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


TAG_ENV = "POLICY_EXPORT_TEST_TAG"


def tritonservers(tag: str) -> set[int]:
    """Running tritonserver processes that inherited ``TAG_ENV=tag``.

    By environment, not by parentage: an orphaned server is reparented to init, which is exactly
    what these checks must catch; and not machine-wide, because other test runs share the machine.
    """
    out = set()
    needle = f"{TAG_ENV}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"tritonserver" not in (entry / "cmdline").read_bytes().split(b"\0")[0]:
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                out.add(int(entry.name))
        except OSError:
            continue
    return out


def tag_servers(monkeypatch) -> str:
    """Make every tritonserver this test starts inherit a fresh tag; returns it."""
    import uuid

    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_ENV, tag)
    return tag


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate, timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


@dataclass
class Served:
    proc: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    metrics_port: int
    lines: list[str] = field(default_factory=list)
    server_pid: int = 0
    workdir: Path | None = None
    #: Every replica's tritonserver (``--replicas N``); ``server_pid`` is the first.
    server_pids: list[int] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def output(self) -> str:
        return "\n".join(self.lines)


def _pump(stream, sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line.rstrip("\n"))
    sink.put(None)


@contextlib.contextmanager
def serve_process(
    repo: Path | str,
    *extra: str,
    ready_timeout_s: float = READY_TIMEOUT_S,
    sigint_ignored: bool = False,
    replicas: int = 1,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Served]:
    """Start ``python -m policy_export serve --repo REPO`` on free ports; wait for its ready line.

    ``sigint_ignored`` starts it the way a non-interactive shell starts a background job (``cmd &``):
    with SIGINT ignored, which Python then leaves ignored unless the program maps it itself.
    """
    require_server()
    ports = free_ports(3)
    env = {**os.environ, "POLICY_EXPORT_TRITON_VENV": str(SERVER_VENV), **(env_extra or {})}
    # die_with_parent: a pytest run killed outright (a CI timeout) must not leave serve running.
    cmd = [*die_with_parent(), sys.executable, "-m", "policy_export", "serve", "--repo", str(repo)]
    cmd += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), *extra]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=ignore
    )
    served = Served(proc, *ports)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"serve not ready in {ready_timeout_s:.0f} s:\n{served.output()}") from None
            if line is None:
                raise AssertionError(f"serve exited ({proc.wait(10)}) before it was ready:\n{served.output()}")
            served.lines.append(line)
            if line.startswith("replicas:" if replicas > 1 else "ready"):  # serve's last line once all are up
                break
        kids = [p for p in children(proc.pid) if "tritonserver" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(kids) == replicas, f"expected {replicas} tritonserver children, found {kids}"
        served.server_pid, served.server_pids = kids[0], kids
        served.workdir = Path(os.readlink(f"/proc/{kids[0]}/cwd"))
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pid in served.server_pids:  # never leave one behind, even when a test fails
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        while True:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            served.lines.append(line)
