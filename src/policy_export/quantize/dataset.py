"""Calibration from a LeRobotDataset folder (format v3.0): the robot's own frames and states.

Read directly from the folder (``meta/info.json``, the ``data/`` parquet files, and for video
features the ``meta/episodes/`` index and the ``videos/`` mp4 files), with pyarrow and PyAV:
LeRobot's own ``LeRobotDataset`` class needs the ``datasets`` package, which pins an older
fsspec than the rest of the toolchain. The folder is checked before anything is decoded: not a
LeRobotDataset, or features that do not match the checkpoint, is one line naming both.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError, UnavailableError

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint

INFO = "meta/info.json"


def read_info(folder: Path) -> dict[str, Any]:
    info_path = folder / INFO
    if not folder.is_dir() or not info_path.is_file():
        raise BadInputError(
            f"--calibration {folder}: not a LeRobotDataset folder (no {INFO}); give the dataset's root folder, "
            "or leave --calibration out to calibrate on the checkpoint's statistics"
        )
    try:
        info = json.loads(info_path.read_text())
        features = info["features"]
        if not isinstance(features, dict):
            raise TypeError("features is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(
            f"--calibration {info_path}: not a LeRobotDataset info.json ({type(exc).__name__}: {exc})"
        ) from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise BadInputError(
            f"--calibration {info_path}: LeRobotDataset format {version or '(none)'}; this reads v3.0 "
            "(convert it with LeRobot's convert_dataset_v21_to_v30 script)"
        )
    return info


def check_features(folder: Path, info: dict[str, Any], ckpt: LoadedCheckpoint) -> None:
    """Every input of the checkpoint must be a dataset feature of the same shape (images: HWC in the dataset)."""
    spec, features = ckpt.spec, info["features"]
    wanted: dict[str, tuple[int, ...]] = {spec.state_key: (spec.state_dim,)}
    for cam in spec.cameras:
        wanted[cam.key] = (cam.shape[1], cam.shape[2], cam.shape[0])
    problems = []
    for key, shape in wanted.items():
        feat = features.get(key)
        if feat is None:
            problems.append(f"no feature '{key}'")
            continue
        have = tuple(int(d) for d in feat.get("shape", ()))
        if key != spec.state_key and feat.get("dtype") not in ("image", "video"):
            problems.append(f"'{key}' is {feat.get('dtype')}, not an image or video")
        elif have != shape:
            what = "[H, W, C]" if key != spec.state_key else "[dim]"
            problems.append(f"'{key}' has shape {list(have)}, the checkpoint takes {list(shape)} {what}")
    if problems:
        raise BadInputError(
            f"--calibration {folder}: features do not match checkpoint {ckpt.path}: {'; '.join(problems)}; "
            "use the dataset the policy was trained on"
        )


def _read_table(files: list[Path]) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UnavailableError(
            "--calibration needs pyarrow to read the dataset; pip install 'policy-export[cpu-lowp]'"
        ) from exc
    try:
        return pa.concat_tables([pq.read_table(f) for f in files])
    except (OSError, pa.ArrowException) as exc:
        raise BadInputError(
            f"--calibration {files[0].parent}: unreadable parquet ({type(exc).__name__}: {exc})"
        ) from exc


def _image(value: Any) -> np.ndarray:
    """An embedded image cell ({bytes, path}) as float CHW [0, 1]."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes):
        raise BadInputError(
            "--calibration: an image cell holds no embedded bytes; re-save the dataset with images embedded"
        )
    with Image.open(io.BytesIO(data)) as im:
        hwc = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


class _Videos:
    """Frames of video features by (key, episode, timestamp), through the episodes index and PyAV."""

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        self.folder = folder
        self.pattern = str(
            info.get("video_path", "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
        )
        files = sorted((folder / "meta" / "episodes").rglob("*.parquet"))
        if not files:
            raise BadInputError(f"--calibration {folder}: video features but no meta/episodes/*.parquet index")
        self.episodes = {int(r["episode_index"]): r for r in _read_table(files).to_pylist()}

    def frame(self, key: str, episode: int, timestamp: float) -> np.ndarray:
        try:
            import av
        except ImportError as exc:
            raise UnavailableError(
                "--calibration with video features needs PyAV; pip install 'policy-export[cpu-lowp]'"
            ) from exc
        row = self.episodes.get(episode)
        if row is None:
            raise BadInputError(f"--calibration {self.folder}: episode {episode} is not in meta/episodes")
        path = self.folder / self.pattern.format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )
        target = float(row[f"videos/{key}/from_timestamp"]) + timestamp
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                best: Any = None
                for frame in container.decode(stream):
                    if best is not None and frame.time is not None and frame.time > target + 1e-4:
                        break
                    best = frame
        except (OSError, av.FFmpegError) as exc:
            raise BadInputError(f"--calibration {path}: cannot decode ({type(exc).__name__}: {exc})") from exc
        if best is None:
            raise BadInputError(f"--calibration {path}: no frames")
        return np.ascontiguousarray(best.to_ndarray(format="rgb24").astype(np.float32).transpose(2, 0, 1) / 255.0)


def dataset_samples(
    folder: Path, ckpt: LoadedCheckpoint, count: int, seed: int = 0
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """``count`` batch-1 feeds of real observations, spread over the whole dataset (seeded), and a record of them."""
    info = read_info(folder)
    check_features(folder, info, ckpt)
    spec = ckpt.spec
    files = sorted((folder / "data").rglob("*.parquet"))
    if not files:
        raise BadInputError(f"--calibration {folder}: no data/*.parquet files; is the dataset complete?")
    table = _read_table(files)
    columns = set(table.column_names)
    for key in [spec.state_key, *(c.key for c in spec.cameras if info["features"][c.key]["dtype"] == "image")]:
        if key not in columns:
            raise BadInputError(f"--calibration {folder}: data parquet has no column '{key}'")
    n = table.num_rows
    if n == 0:
        raise BadInputError(f"--calibration {folder}: the dataset has no frames")
    rng = np.random.default_rng([seed, 23])
    rows = np.sort(rng.choice(n, size=min(count, n), replace=False))
    videos = _Videos(folder, info) if any(info["features"][c.key]["dtype"] == "video" for c in spec.cameras) else None
    episode = table.column("episode_index").to_numpy() if "episode_index" in columns else np.zeros(n, int)
    stamps = table.column("timestamp").to_numpy() if "timestamp" in columns else np.zeros(n)
    steps = spec.n_obs_steps
    # First row of each row's episode (rows are stored in order): a history never reaches into another episode.
    starts = np.zeros(n, dtype=int)
    for i in range(1, n):
        starts[i] = starts[i - 1] if episode[i] == episode[i - 1] else i

    def observation(i: int) -> dict[str, np.ndarray]:
        obs = {"state": np.asarray(table.column(spec.state_key)[i].as_py(), np.float32).reshape(spec.state_dim)}
        for cam in spec.cameras:
            if info["features"][cam.key]["dtype"] == "image":
                obs[cam.input_name] = _image(table.column(cam.key)[i].as_py())
            else:
                assert videos is not None
                obs[cam.input_name] = videos.frame(cam.key, int(episode[i]), float(stamps[i]))
        return obs

    feeds = []
    for i in (int(r) for r in rows):
        if steps is None:
            history = [observation(i)]
        else:  # the previous frames of the same episode; the first repeated at its start (LeRobot's populate_queues)
            history = [observation(max(j, int(starts[i]))) for j in range(i - steps + 1, i + 1)]
        if steps is None:
            feed = {k: v[None] for k, v in history[0].items()}
        else:
            feed = {k: np.stack([h[k] for h in history])[None] for k in history[0]}
        for noise in spec.noise_inputs:
            feed[noise.name] = rng.standard_normal((1, *noise.shape)).astype(np.float32)
        feeds.append(feed)
    return feeds, {"source": f"LeRobotDataset {folder.name}", "folder": str(folder), "rows": n}
