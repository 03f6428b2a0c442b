"""Everything checked about a checkpoint's files *before* they are handed to LeRobot: that they
exist, can be opened (a permission problem told apart from a corrupt file), parse, and that
every safetensors file named is whole.

Apart from the loader because these checks need neither lerobot nor torch, and each one
fails with one line naming the file and the fix instead of a deep traceback.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from policy_export.checkpoint.weights import check_config_against_weights
from policy_export.declarations import declaration_for
from policy_export.errors import BadInputError


def unreadable(path: Path, exc: OSError) -> BadInputError:
    """The one line for a checkpoint file that cannot be opened: what is wrong and how to fix it.

    Told apart from a corrupt file on purpose: "re-copy it" does nothing for a permission problem.
    """
    if isinstance(exc, PermissionError):
        try:
            st = path.stat()
            whose = f"owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"
        except OSError:
            whose = "its folder is not searchable"
        return BadInputError(
            f"{path}: permission denied ({whose}; this process runs as uid {os.geteuid()}); "
            f"make it readable, e.g. chmod a+r {path} (and a+x on its folders), or run as its owner"
        )
    if isinstance(exc, IsADirectoryError):
        return BadInputError(f"{path}: is a folder, not a file; copy the checkpoint's file there")
    return BadInputError(f"{path}: cannot be read ({exc.strerror or exc}); check the disk and copy it again")


def _open_check(path: Path) -> None:
    """Open ``path`` as the loaders will, so an OSError is classified here and not blamed on the content."""
    try:
        with open(path, "rb") as f:
            f.read(8)
    except OSError as exc:
        raise unreadable(path, exc) from exc


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}); re-save the checkpoint"
        ) from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: {what} must hold a JSON object; re-save the checkpoint")
    return data


def _check_files(root: Path) -> None:
    """Fail fast, with the file name, on anything LeRobot would choke on obscurely."""
    if not root.exists():
        raise BadInputError(
            f"{root}: checkpoint directory does not exist; pass the 'pretrained_model' folder written by training"
        )
    if not root.is_dir():
        raise BadInputError(f"{root}: --checkpoint must be a directory (the 'pretrained_model' folder), not a file")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        hint = " (did you mean its 'pretrained_model' subfolder?)" if (root / "pretrained_model").is_dir() else ""
        raise BadInputError(f"{cfg_path}: missing; this is not a LeRobot pretrained_model directory{hint}")
    cfg = _read_json(cfg_path, "policy config")
    declaration_for(cfg.get("type"), where=str(cfg_path)).check_config(cfg, cfg_path)
    weights = root / "model.safetensors"
    if weights.is_dir():
        raise unreadable(weights, IsADirectoryError(21, "Is a directory"))
    if not weights.is_file():
        raise BadInputError(f"{weights}: missing; the checkpoint is partial, copy the whole pretrained_model folder")
    _check_safetensors(weights)
    check_config_against_weights(cfg, weights, cfg_path)  # before LeRobot builds a model of the config's sizes
    for role in ("preprocessor", "postprocessor"):
        jpath = root / f"policy_{role}.json"
        if not jpath.is_file():
            raise BadInputError(
                f"{jpath}: missing; checkpoints from LeRobot >= 0.4 carry their {role}. "
                "Migrate older checkpoints with lerobot's migrate_policy_normalization script"
            )
        steps = _read_json(jpath, f"{role} pipeline").get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
            raise BadInputError(f"{jpath}: 'steps' must be a list of step objects; re-save the checkpoint")
        for step in steps:
            state_file = step.get("state_file")
            if state_file:
                spath = state_file_path(root, jpath, state_file)
                if not spath.is_file():
                    raise BadInputError(f"{spath}: missing (named by {jpath.name}); the checkpoint is partial")
                _check_safetensors(spath)


def check_checkpoint(root: Path) -> None:
    """The file checks :func:`~policy_export.checkpoint.load_checkpoint` starts with, for a command that
    loads the checkpoint somewhere else later (bench's eager worker, after seconds of imports): a missing
    or broken folder is one line at once."""
    _check_files(root)


PROCESSOR_JSONS = ("policy_preprocessor.json", "policy_postprocessor.json")


def state_file_path(root: Path, jpath: Path, value: object) -> Path:
    """Where a processor step's ``state_file`` is, refused unless it is inside the checkpoint folder.

    LeRobot joins the name to the folder as it is, so ``..``, an absolute path or a link out
    would make the checkpoint read (and a later ``--output`` could replace) a file that is not
    part of it; ``save_pretrained`` only ever writes plain names beside the JSON.
    """
    if not isinstance(value, str) or not value:
        raise BadInputError(f"{jpath}: a step's state_file must be a file name, got {value!r}; re-save the checkpoint")
    spath = root / value
    real, home = Path(os.path.realpath(spath)), Path(os.path.realpath(root))
    if Path(value).is_absolute() or not real.is_relative_to(home):
        raise BadInputError(
            f"{jpath}: state_file {value!r} resolves outside the checkpoint folder ({real}); "
            f"copy the file into {root} and name it there (as save_pretrained writes it)"
        )
    return spath


def checkpoint_files(root: Path) -> list[Path]:
    """The checkpoint folder and every file a load reads, wherever the processor JSONs point.

    Best effort and never raising: it feeds the no-clobber guard, which runs before the
    checks above; a state file named outside the folder is listed (so an output there is
    refused as an input) and then refused by :func:`state_file_path` when loading.
    """
    files = [root, root / "config.json", root / "model.safetensors"]
    for name in PROCESSOR_JSONS:
        jpath = root / name
        files.append(jpath)
        try:
            steps = json.loads(jpath.read_text()).get("steps", [])
            named = [s.get("state_file") for s in steps if isinstance(s, dict)]
        except (OSError, ValueError, AttributeError):
            continue
        files.extend(root / n for n in named if isinstance(n, str) and n)
    return files


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    _open_check(path)
    try:
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as exc:  # safetensors raises several unrelated types for a damaged file
        raise BadInputError(f"{path}: corrupted safetensors file ({exc}); re-copy it from the training run") from exc
