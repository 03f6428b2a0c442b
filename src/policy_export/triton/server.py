"""Find and run the ``tritonserver`` that ships inside the nvidia-pytriton wheel.

Why this exists: Docker is not available on CI or on most developer laptops, yet a model
repository is only proven by a real server loading and answering it. The nvidia-pytriton
wheel carries a complete ``tritonserver`` (2.51) with the Python backend only. It needs
numpy < 2, so it lives in its own virtualenv (``.venv-triton``, made by ``make triton-venv``
from ``requirements-triton-server.txt``), separate from the main one where lerobot needs
numpy >= 2.

Making that binary run on a CPU-only machine takes four things (prepared by
:mod:`policy_export.triton.install`; this module runs the process):

1. a backend directory holding the Python backend (``libtriton_python.so``,
   ``triton_python_backend_utils.py``) plus the Python-backend stub built for the server
   venv's Python version, copied from the wheel's ``python_backend_stubs/<X.Y>/``;
2. ``LD_LIBRARY_PATH`` with that Python's LIBDIR (the stub links ``libpython3.X.so``) and the
   wheel's ``nvidia_pytriton.libs``;
3. ``PATH`` starting with the server venv's ``bin``: the stub finds its site-packages (numpy,
   onnxruntime) through the ``python3`` it sees first;
4. optional Python-based stand-in backends (``backends/<name>/model.py``). The only one is
   ``onnxruntime``: a TEST STAND-IN for Triton's native C++ ONNX Runtime backend, which is
   not installable here. It lets an unmodified ``platform: "onnxruntime_onnx"`` config be
   loaded, batched and served; it is not the native backend and is never shipped as one.

Everything binds to 127.0.0.1 only, on free ports, and every wait is bounded.

Run a repository by hand (Ctrl-C, SIGTERM or SIGHUP stops it, server and temp folder included)::

    policy-export serve --repo model_repository
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from policy_export.errors import BadInputError, UnavailableError
from policy_export.signals import signals_as_interrupt
from policy_export.triton.install import ServerInstall, find_server, prepare_backends, server_env


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> tuple[int, ...]:
    """``n`` distinct free ports. The sockets stay bound until all are picked: one at a time, the
    kernel may hand the same ephemeral port back twice, and tritonserver refuses to start when its
    HTTP and gRPC ports coincide (a CI run lost 13 server tests to that)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return tuple(int(s.getsockname()[1]) for s in socks)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` is taken: checked before start-up, because tritonserver reports a busy
    port only as a log line after seconds of loading models. SO_REUSEADDR as the server sets it:
    a port left in TIME_WAIT by a server that just stopped is free, a listening one is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _metrics_args(metrics_port: int | None) -> list[str]:
    if metrics_port is None:
        return ["--allow-metrics=false"]
    # Per-model inference counters only: no GPU here, and CPU gauges are not what a fleet is sized by.
    return [
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=false",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
    ]


def server_command(
    install: ServerInstall,
    repo: Path | str,
    backends: Path,
    http_port: int,
    grpc_port: int,
    extra: tuple[str, ...] = (),
    metrics_port: int | None = None,
) -> list[str]:
    return [
        str(install.binary),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        *_metrics_args(metrics_port),
        # Serve config.pbtxt exactly as written: no backend auto-completion behind our back.
        "--disable-auto-complete-config",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--exit-timeout-secs=5",
        # No GPU: keep the server from reserving (and warning about) CUDA memory.
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        *extra,
    ]


def die_with_parent() -> list[str]:
    """A ``setpriv --pdeathsig SIGTERM`` prefix, so the kernel stops the server if this process
    dies without unwinding (SIGKILL, an OOM kill), when signal handlers never run.

    Only from the main thread: the parent-death signal fires when the *thread* that started the
    server exits, and a server started from a worker thread must outlive that thread. Empty
    where util-linux's ``setpriv`` is missing (the signal handlers still cover SIGTERM/SIGINT/SIGHUP).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "SIGTERM", "--"]


@dataclass
class TritonServer:
    """One tritonserver process on loopback; a context manager that always stops it.

    ``http_url`` / ``grpc_url`` are ``host:port`` strings, the form tritonclient takes.
    ``metrics_port``: None serves no metrics, 0 picks a free port (like the other ports when
    they are 0), anything else is that port; ``metrics_url`` is the Prometheus endpoint.
    """

    repo: Path | str  # a folder, or an ``s3://host:port/bucket/prefix`` repository (Triton's own form)
    install: ServerInstall | None = None
    workdir: Path | None = None
    startup_timeout_s: float = 90.0
    extra_args: tuple[str, ...] = ()
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int | None = None
    startup_seconds: float = float("nan")
    exit_code: int | None = None  # set by stop()
    log_path: Path | None = None
    final_log: str = ""  # log_tail() as cleanup() found it: the log goes with the temp folder
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        install = self.install or find_server()
        self.install = install
        remote = isinstance(self.repo, str) and self.repo.startswith("s3://")
        if not remote and not Path(self.repo).is_dir():
            raise BadInputError(f"{self.repo}: model repository folder does not exist")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="policy-export-triton-")
            self.workdir = Path(self._tmp.name)
        backends = prepare_backends(install, self.workdir / "backends")
        self.log_path = self.workdir / "tritonserver.log"
        fixed_ports = bool(self.http_port and self.grpc_port and self.metrics_port != 0)
        pick_metrics = self.metrics_port == 0
        for attempt in range(3):
            if not fixed_ports:
                if pick_metrics:
                    self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
                else:
                    self.http_port, self.grpc_port = free_ports(2)
            cmd = server_command(
                install,
                self.repo if remote else Path(self.repo).absolute(),
                backends,
                self.http_port,
                self.grpc_port,
                self.extra_args,
                self.metrics_port,
            )
            t0 = time.perf_counter()
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    [*die_with_parent(), *cmd],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(install),
                    cwd=self.workdir,
                    start_new_session=True,
                )
            try:
                self._wait_ready()
            except UnavailableError:
                tail = self.log_tail().lower()
                port_clash = "address already in use" in tail or "same address and port" in tail
                self.stop()
                if port_clash and not fixed_ports and attempt < 2:
                    continue
                raise
            self.startup_seconds = time.perf_counter() - t0
            return

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise UnavailableError(
                    f"tritonserver exited with code {code} before it was ready; last log lines:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        raise UnavailableError(
            f"tritonserver not ready after {self.startup_timeout_s:.0f} s; last log lines:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 25) -> str:
        """Error lines first (a failed model load is reported far above the end), then the last lines."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        errors = [ln[:2000] for ln in text if ln.startswith("E") and "CudaDriverHelper" not in ln]
        tail = [ln for ln in text[-lines:] if ln not in errors]
        return "\n".join([*errors[-10:], *tail])

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait (Triton drains in-flight requests), then SIGKILL the process group.

        The final SIGKILL sits in ``finally``: an interrupt that lands during the wait still
        takes the server and its Python-backend stubs (same session) down with it.
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            self._proc = None
        self.exit_code = proc.returncode
        return proc.returncode

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self.final_log = self.log_tail()
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TritonServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(server: TritonServer, on_ready: Callable[[TritonServer], None], poll_s: float = 0.5) -> int:
    """Run ``server`` until it exits on its own or this process is interrupted; always stop it
    and remove its temp folder.

    Returns the server's own exit code when it stopped by itself; Ctrl-C, SIGTERM and SIGHUP
    propagate (as KeyboardInterrupt / :class:`Terminated`) after the server is gone.
    """
    try:
        with signals_as_interrupt(), server:
            on_ready(server)
            while server.returncode is None:
                time.sleep(poll_s)
    finally:
        server.stop()
        server.cleanup()
    return server.exit_code or 0


def serve_many(servers: list[TritonServer], on_ready: Callable[[list[TritonServer]], None], poll_s: float = 0.5) -> int:
    """:func:`serve` for several replicas: all started (one after the other), all stopped when one
    exits by itself (its code is returned) or on an interrupt, temp folders removed."""
    try:
        with signals_as_interrupt(), contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(server)
            on_ready(servers)
            while all(server.returncode is None for server in servers):
                time.sleep(poll_s)
    finally:
        for server in servers:
            server.stop()
            server.cleanup()
    return next((s.exit_code for s in servers if s.exit_code), 0) or 0


if __name__ == "__main__":  # the old entry point: say where it went instead of exiting 0 silently
    import sys

    sys.stderr.write("error: serve a repository with `policy-export serve --repo DIR` (see --help)\n")
    raise SystemExit(2)
