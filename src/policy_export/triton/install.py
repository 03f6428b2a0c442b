"""Find the ``tritonserver`` that ships inside the nvidia-pytriton wheel, and prepare what it needs
to run on a CPU-only machine: the backend directory and the environment (points 1 to 4 of
:mod:`policy_export.triton.server`).

Apart from the process that runs the server because this is about one virtualenv's contents
(which Python, which stub, which libraries), checked once and reused by every server started
from it; a missing or broken install is reported here, with the command that makes one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from policy_export.errors import BadInputError, UnavailableError
from policy_export.triton.templates import template_text

VENV_ENV = "POLICY_EXPORT_TRITON_VENV"
DEFAULT_VENV = ".venv-triton"
STAND_IN_BACKENDS = ("onnxruntime", "openvino")
#: Stand-in file and the model module it subclasses, per backend name.
_STAND_IN_FILES = {
    "onnxruntime": ("onnxruntime_stand_in.py", "ort_model.py", "policy_export_ort_model.py"),
    "openvino": ("openvino_stand_in.py", "ov_model.py", "policy_export_ov_model.py"),
}
MAKE_HINT = "create it with `make triton-venv` (or pip install -r requirements-triton-server.txt in a Python 3.12 venv)"


@dataclass(frozen=True)
class ServerInstall:
    """Where the wheel's server lives inside a virtualenv, and the Python it must use."""

    venv: Path
    root: Path  # .../site-packages/pytriton/tritonserver
    python_version: str  # "3.12"
    python_libdir: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def stub(self) -> Path:
        return self.root / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    @property
    def libs(self) -> Path:
        return self.root.parent.parent / "nvidia_pytriton.libs"


def venv_candidates() -> list[Path]:
    """Where the server venv is looked for when ``--venv`` is not given, in this order: $POLICY_EXPORT_TRITON_VENV
    (only there, when set); ``./.venv-triton``; ``.venv-triton`` in the project folder this code runs from (a clone
    or an editable install: ``make`` puts it there); ``.venv-triton`` beside the venv running policy-export.

    Why not only the current folder: ``serve`` run from anywhere but the clone's root said there was no server."""
    env = os.environ.get(VENV_ENV)
    if env:
        return [Path(env)]
    project = Path(__file__).resolve().parents[3]  # src/policy_export/triton/install.py -> the clone
    found: list[Path] = []
    for place in (Path.cwd(), project, Path(sys.prefix).parent):
        candidate = (place / DEFAULT_VENV).absolute()
        if candidate not in found:
            found.append(candidate)
    return found


def default_venv() -> Path:
    """The first of :func:`venv_candidates` holding a Python (the first one when none does)."""
    candidates = venv_candidates()
    return next((c for c in candidates if (c / "bin" / "python").exists()), candidates[0])


def _venv_python_facts(venv: Path) -> tuple[str, Path]:
    python = venv / "bin" / "python"
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
            "print(sysconfig.get_config_var('LIBDIR'))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise UnavailableError(
            f"{python}: cannot run the server venv's Python ({out.stderr.strip()[-200:]}); {MAKE_HINT}"
        )
    version, libdir = out.stdout.split()
    return version, Path(libdir)


def find_server(venv: Path | None = None) -> ServerInstall:
    """Locate tritonserver in ``venv`` (default: the first of :func:`venv_candidates` that exists)."""
    if venv is None:
        candidates = venv_candidates()
        venv = default_venv()
        if not (venv / "bin" / "python").exists():
            raise UnavailableError(
                f"no Triton server virtualenv in {', '.join(map(str, candidates))}; {MAKE_HINT}, "
                f"or give --venv / set {VENV_ENV}"
            )
    venv = venv.absolute()
    if not (venv / "bin" / "python").exists():
        raise UnavailableError(f"{venv}: no Triton server virtualenv here; {MAKE_HINT}")
    roots = sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver"))
    if not roots or not (roots[0] / "bin" / "tritonserver").exists():
        raise UnavailableError(f"{venv}: nvidia-pytriton (tritonserver) is not installed in it; {MAKE_HINT}")
    version, libdir = _venv_python_facts(venv)
    install = ServerInstall(venv=venv, root=roots[0], python_version=version, python_libdir=libdir)
    if not install.stub.exists():
        raise UnavailableError(f"{install.stub}: the wheel has no Python-backend stub for Python {version}")
    if not any(libdir.glob(f"libpython{version}*.so*")):
        raise UnavailableError(
            f"{libdir}: no libpython{version}.so; the Python-backend stub needs a Python built with --enable-shared"
        )
    return install


def prepare_backends(install: ServerInstall, dest: Path, stand_ins: tuple[str, ...] = STAND_IN_BACKENDS) -> Path:
    """Write a backend directory: the Python backend with its stub, plus the stand-in backends."""
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.python_backend / name, python_dir / name)
    shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
    for backend in stand_ins:
        if backend not in _STAND_IN_FILES:
            raise BadInputError(f"no stand-in backend named {backend!r}; available: {', '.join(STAND_IN_BACKENDS)}")
        stand_in, model, module = _STAND_IN_FILES[backend]
        bdir = dest / backend
        bdir.mkdir(exist_ok=True)
        (bdir / "model.py").write_text(template_text(stand_in))
        (bdir / module).write_text(template_text(model))
    return dest


def server_env(install: ServerInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    env["PATH"] = f"{install.venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    libs = [str(install.python_libdir), str(install.libs)]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["VIRTUAL_ENV"] = str(install.venv)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env
