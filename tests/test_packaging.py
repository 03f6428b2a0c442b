"""The built distributions, installed the way users install them: no editable install, no source tree.

Why: every other test imports the source tree (``make`` installs the project editable), which hid a
hand-written package list that left three subpackages out of the wheel. Here the sdist and the wheel
are built from a copy of the tree (what a fresh clone holds), the wheel is checked against the tree's
packages, and then installed without ``-e`` into fresh virtualenvs whose commands run from a folder
outside the tree, with ``PYTHONPATH`` unset:

- the toolchain: the fresh venv reaches the heavy dependencies (torch, lerobot, ...) of the venv
  running the tests through one plain path line in a ``.pth`` file (no second multi-GB install; a
  path line does not run that venv's editable-install hook, so ``policy_export`` can only come from
  the wheel, which the test asserts), then runs ``--help``, ``inspect``, ``onnx`` and ``verify``;
- the robot host, as the README says: numpy and onnxruntime (the distributions ``pip install numpy
  onnxruntime`` brings, linked file by file from the test venv, so the test needs no network) plus
  the wheel with ``--no-deps``. torch, lerobot and transformers are not importable there at all, so
  a stray import fails the test rather than slipping through.

``nox -s robot_host`` does the robot-host install from the package index for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# Never part of a fresh clone, even when git is not there to say what is ignored.
_NOT_SOURCE = (".git", ".venv*", ".nox", ".pypath", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def _clone(dest: Path) -> Path:
    """What a fresh clone holds (tracked files plus new, not ignored ones), copied to ``dest``."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist): copy the folder
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*_NOT_SOURCE), symlinks=True)
        return dest
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def tree_packages(root: Path) -> dict[str, Path]:
    """Every package of the tree by its installed name, read from pyproject's ``package-dir`` (not from
    setup.py, the code under test): a folder with an ``__init__.py`` below a mapped folder."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found: dict[str, Path] = {}
    for name, folder in mapping.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if "__pycache__" in rel:
                continue
            dotted = ".".join(([name] if name else []) + list(rel))
            if dotted:
                found[dotted] = init.parent
    # A folder mapped by name must not also be found under the root mapping.
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """sdist, then the wheel built from that sdist (``python -m build``'s default), from a clone of the tree."""
    work = tmp_path_factory.mktemp("build")
    src = _clone(work / "src")
    out = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    (wheel,) = (work / "dist").glob("*.whl")
    (sdist,) = (work / "dist").glob("*.tar.gz")
    return {"src": src, "wheel": wheel, "sdist": sdist, "log": log}


def _files_under(packages: dict[str, Path]) -> dict[str, Path]:
    """Installed path -> tree file, for every file of every package (modules and package data)."""
    files = {}
    for name, folder in packages.items():
        for path in folder.iterdir():
            if path.is_file() and path.suffix != ".pyc":
                files["/".join([*name.split("."), path.name])] = path
    return files


def test_wheel_and_sdist_hold_every_package_and_file_of_the_tree(built):
    packages = tree_packages(built["src"])
    assert {"policy_export", "policy_export.runtime.realtime", "policy_export_wrappers"} <= set(packages)
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert in_wheel == set(packages), (
        f"missing from the wheel: {sorted(set(packages) - in_wheel)}; not in the tree: {sorted(in_wheel - set(packages))}"
    )
    wanted = _files_under(packages)
    assert not set(wanted) - names, f"files of the tree missing from the wheel: {sorted(set(wanted) - names)}"

    with tarfile.open(built["sdist"]) as sd:
        members = {m.split("/", 1)[1] for m in sd.getnames() if "/" in m}
    src = built["src"]
    needed = {str(p.relative_to(src)) for p in wanted.values()} | {"pyproject.toml", "setup.py", "README.md", "LICENSE"}
    assert not needed - members, f"missing from the sdist: {sorted(needed - members)}"


def test_wheel_carries_the_license_text_its_metadata_names(built):
    """The metadata says Apache-2.0; a wheel without the licence text is not redistributable as such."""
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = whl.read(meta).decode()
        texts = [n for n in names if ".dist-info/licenses/" in n]
        assert texts, f"no licence file in the wheel's dist-info: {names[-8:]}"
        body = whl.read(texts[0]).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in body and "Version 2.0" in body


def test_build_prints_no_deprecation_warning(built):
    """setuptools deprecations (the license table was one) turn into build failures on a later date."""
    flagged = [line for line in built["log"].splitlines() if "deprecat" in line.lower()]
    assert not flagged, "\n".join(flagged)


def _fresh_venv(path: Path, site_paths: list[Path]) -> Path:
    """A venv without pip (the test venv's pip installs into it through ``--python``), reaching
    ``site_paths`` through plain path lines: those folders' own ``.pth`` hooks do not run."""
    venv.create(path, with_pip=False, symlinks=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=_clean_env(),
    ).stdout.strip()
    if site_paths:
        (Path(purelib) / "borrowed.pth").write_text("".join(f"{p}\n" for p in site_paths))
    return python


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH (the tests' own points at the source tree), nothing of the test venv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    return env


def _pip_install_wheel(python: Path, wheel: Path) -> None:
    """``pip install --no-deps WHEEL`` into the fresh venv; ``--ignore-installed`` so pip never touches the
    distributions it sees through the borrowed path (the test venv's own editable policy-export among them)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _run(cmd: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=_clean_env()
    )


def _imported_from(python: Path, cwd: Path, module: str) -> Path:
    out = _run([python, "-c", f"import {module}; print({module}.__file__)"], cwd)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def test_wheel_installed_toolchain_runs_inspect_onnx_verify(built, small_ckpt, tmp_path):
    import sysconfig

    env_dir = tmp_path / "toolchain"
    python = _fresh_venv(env_dir, [Path(sysconfig.get_path("purelib"))])
    _pip_install_wheel(python, built["wheel"])
    run_dir = tmp_path / "run"  # outside the source tree: nothing to import from the cwd
    run_dir.mkdir()
    for module in ("policy_export", "policy_export.runtime.realtime", "policy_export_wrappers"):
        assert _imported_from(python, run_dir, module).is_relative_to(env_dir), module
    res = _run([env_dir / "bin" / "policy-export", "--help"], run_dir)  # the console script
    assert res.returncode == 0 and "inspect" in res.stdout and "verify" in res.stdout, res.stdout + res.stderr

    # inspect, onnx and verify in one process of the fresh venv (its main(), as the console script calls
    # it): each process would otherwise spend seconds importing torch and lerobot again.
    onnx, report = run_dir / "small.onnx", run_dir / "parity.json"
    commands = [
        ["inspect", "--checkpoint", str(small_ckpt)],
        ["onnx", "--checkpoint", str(small_ckpt), "--output", str(onnx)],
        [
            "verify",
            "-c",
            str(small_ckpt),
            "-a",
            str(onnx),
            "--batch-sizes",
            "1",
            "--samples",
            "1",
            "--report",
            str(report),
        ],
    ]
    res = _run([python, "-c", CLI_DRIVER, json.dumps(commands)], run_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    assert codes == [0, 0, 0], res.stdout + res.stderr
    assert "chunk" in res.stdout.lower() and onnx.is_file(), res.stdout  # inspect's summary, onnx's file
    assert json.loads(report.read_text())["status"] == "passed"


CLI_DRIVER = r"""
import json, sys
from policy_export.cli.app import main
codes = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["policy-export", *argv]
    try:
        main()
    except SystemExit as exc:
        codes.append(exc.code or 0)
print(json.dumps(codes))
"""


def _requirement_closure(names: tuple[str, ...]) -> list:
    """The installed distributions ``pip install NAMES`` brings: NAMES and their requirements, recursively."""
    seen: dict = {}
    todo = list(names)
    while todo:
        dist = distribution(todo.pop())
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link_distributions(dists: list, purelib: Path) -> None:
    """Each distribution's files (its RECORD) linked into ``purelib``, as if pip had installed it there."""
    for dist in dists:
        for rel in dist.files or []:
            if rel.parts[0] == ".." or rel.suffix == ".pyc":  # console scripts: not needed on the robot
                continue
            src = Path(str(dist.locate_file(rel)))
            dest = purelib / rel
            if src.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(src)


def test_robot_host_install_runs_the_realtime_client_without_torch(built, small_onnx, tmp_path):
    """The README's robot host: numpy + onnxruntime + the wheel with --no-deps, then a 30 Hz loop."""
    env_dir = tmp_path / "robot"
    python = _fresh_venv(env_dir, [])
    purelib = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    )
    _link_distributions(_requirement_closure(("numpy", "onnxruntime")), purelib)
    _pip_install_wheel(python, built["wheel"])
    res = _run([python, Path(__file__).with_name("robot_host_loop.py"), small_onnx, "30"], tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert all(out["absent"].values()), f"not a bare robot host, importable: {out['absent']}"
    assert out["loaded"] == [], out["loaded"]
    assert Path(out["file"]).is_relative_to(env_dir), out["file"]
    assert out["steps"] == 30 and out["chunks_received"] >= 1, out
    assert out["shapes"] == [[1, out["action_dim"]]], out
