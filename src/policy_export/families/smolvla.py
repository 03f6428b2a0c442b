"""SmolVLA, toolchain half: core, LeRobot reference (same noise, same leftovers) and rollout modes.

Its declaration is :class:`policy_export.declarations.smolvla.SmolVLADeclaration`; the core is
:class:`policy_export_wrappers.smolvla.SmolVLACore` (tables from
:mod:`policy_export.families.smolvla_tables`). The reference is LeRobot's own
``predict_action_chunk(batch, noise=..., prev_chunk_left_over=..., inference_delay=...)``
with RTC enabled on the policy's config as LeRobot's rollout enables it, the leftover normalized
by LeRobot's own postprocessor statistics (LeRobot guides with model-space leftovers). LeRobot
takes one leftover and one delay per call, so robots whose RTC inputs differ are run one by one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.declarations.smolvla import (
    LANG_MASK,
    LANG_TOKENS,
    NOISE,
    RTC_DELAY,
    RTC_PREV_CHUNK,
    RTC_PREV_LEN,
    SmolVLADeclaration,
)
from policy_export.families.base import Family, ReferenceRollout, RolloutMode, feature_normalizer
from policy_export.reference import lerobot_observation

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from policy_export.checkpoint import LoadedCheckpoint

#: Any task string: the preprocessor's tokenizer step needs one; its tokens are replaced by the feed's.
_PLACEHOLDER_TASK = "task"


class SmolVLAFamily(Family):
    declaration = SmolVLADeclaration()
    # The legacy exporter keeps the scripted Euler loop as one ONNX Loop (dynamo would unroll it;
    # its tracing also froze the batch and token axes of SmolVLA when tried here).
    onnx_exporter = "legacy"

    def build_core(self, ckpt: LoadedCheckpoint, image_format: str) -> torch.nn.Module:
        from policy_export.families.smolvla_tables import build_core

        spec = ckpt.spec
        try:
            return build_core(
                ckpt.policy,
                camera_shapes=[c.shape for c in spec.cameras],
                state_normalizer=feature_normalizer(ckpt, spec.state_key, ckpt.input_stats, inverse=False),
                image_normalizers=[
                    feature_normalizer(ckpt, c.key, ckpt.input_stats, inverse=False) for c in spec.cameras
                ],
                action_normalizer=feature_normalizer(ckpt, spec.action_key, ckpt.output_stats, inverse=False),
                action_unnormalizer=feature_normalizer(ckpt, spec.action_key, ckpt.output_stats, inverse=True),
                image_format=image_format,
            )
        except ValueError as exc:  # an unsupported setting the config checks could not see
            from policy_export.errors import BadInputError

            raise BadInputError(f"{ckpt.path / 'config.json'}: {exc}") from exc

    def for_tracing(self, core: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        """The core traced around a scripted Euler loop: one action-expert step in a TorchScript /
        ONNX ``Loop`` reading the prefix cache, not ``num_steps`` unrolled copies."""
        import torch

        from policy_export_wrappers.smolvla import SmolVLACore, script_for_export

        assert isinstance(core, SmolVLACore)
        return torch.jit.trace(script_for_export(core, args), args, check_trace=False)

    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """preprocessor -> ``predict_action_chunk(batch, noise=..., [RTC])`` -> postprocessor."""
        return lerobot_rtc_chunk(ckpt, feed, image_format)

    def write_sidecars(self, ckpt: LoadedCheckpoint, artifact: Path) -> list[Path]:
        """``<artifact>.tokenizer.json``: the tokenizer the robot's host loads (the one the metadata's sha256 names)."""
        from policy_export.language import write_tokenizer_sidecar

        sha = (ckpt.spec.host.tokenizer or {}).get("sha256")
        return [write_tokenizer_sidecar(artifact, ckpt.policy.config.vlm_model_name, sha)]

    def rollout_modes(self, spec: Any) -> list[RolloutMode]:
        return [RolloutMode(f"rollout queue n={spec.n_action_steps}", spec)]

    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout:
        return SmolVLARollout(ckpt)


def lerobot_rtc_chunk(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
    """LeRobot's chunk for a feed of the VLA signature, RTC per robot: LeRobot guides one leftover per call, so
    robots with a leftover run one by one (shared by every flow-matching VLA family: SmolVLA, pi0, pi0.5)."""
    import torch

    batch = _lerobot_batch(ckpt, feed, image_format)
    noise = torch.from_numpy(np.ascontiguousarray(feed[NOISE]))
    lengths = np.asarray(feed[RTC_PREV_LEN]).reshape(-1)
    delays = np.asarray(feed[RTC_DELAY]).reshape(-1)
    if not lengths.any():
        return _predict(ckpt, batch, noise)
    _enable_rtc(ckpt)
    prev = torch.from_numpy(np.ascontiguousarray(feed[RTC_PREV_CHUNK]))
    rows = []
    for b, (length, delay) in enumerate(zip(lengths.tolist(), delays.tolist(), strict=True)):
        one = {k: v[b : b + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        rtc: dict[str, Any] = {}
        if length > 0:
            rtc = {"prev_chunk_left_over": _model_space(ckpt, prev[b : b + 1, :length]), "inference_delay": int(delay)}
        rows.append(_predict(ckpt, one, noise[b : b + 1], **rtc))
    return np.concatenate(rows)


def _lerobot_batch(
    ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str, task: str | None = None
) -> dict[str, Any]:
    """LeRobot's preprocessed batch for the core's inputs: state and cameras through the preprocessor;
    with ``task``, its tokens from LeRobot's own tokenizer step (what a rollout checks), else the
    tokens and mask the core was given (tokenized on the host)."""
    import torch

    obs = lerobot_observation(ckpt, feed, image_format)
    n = int(np.asarray(feed[ckpt.spec.observation_input_names[0]]).shape[0])
    obs["task"] = [task or _PLACEHOLDER_TASK] * n
    with torch.inference_mode():
        batch = dict(ckpt.preprocessor(obs))
    if task is not None:
        return batch
    batch["observation.language.tokens"] = torch.from_numpy(np.ascontiguousarray(feed[LANG_TOKENS])).to(torch.long)
    batch["observation.language.attention_mask"] = torch.from_numpy(np.ascontiguousarray(feed[LANG_MASK])).to(
        torch.bool
    )
    return batch


def _predict(ckpt: LoadedCheckpoint, batch: dict[str, Any], noise: Any, **rtc: Any) -> np.ndarray:
    import torch

    # no_grad, not inference_mode: LeRobot's RTC guidance runs autograd inside (enable_grad).
    with torch.no_grad():
        chunk = ckpt.policy.predict_action_chunk(dict(batch), noise=noise, **rtc)
        return np.asarray(ckpt.postprocessor(chunk).detach().cpu().numpy(), dtype=np.float32)


def _model_space(ckpt: LoadedCheckpoint, prev: Any) -> Any:
    """A leftover in robot units -> LeRobot's model space, with LeRobot's own normalizer code."""
    from policy_export.checkpoint.normalization import _find_step

    step = _find_step(ckpt.postprocessor, "UnnormalizerProcessorStep")
    if step is None:
        return prev
    return step._normalize_action(prev, inverse=False)


def _enable_rtc(ckpt: LoadedCheckpoint) -> None:
    """What LeRobot's rollout does for RTC: ``config.rtc_config`` set (here: the settings the core baked in)."""
    from policy_export.families.smolvla_tables import RTCSettings

    policy = ckpt.policy
    rtc = getattr(policy.config, "rtc_config", None)
    if rtc is not None and rtc.enabled:
        return
    policy.config.rtc_config = RTCSettings.of(policy.config).lerobot_config()
    policy.init_rtc_processor()


class SmolVLARollout(ReferenceRollout):
    """LeRobot's ``SmolVLAPolicy.select_action(batch, noise=...)`` (RTC off, as select_action requires)."""

    # SmolVLA's select_action calls _get_action_chunk directly, not predict_action_chunk.
    chunk_method = "_get_action_chunk"

    def __enter__(self) -> SmolVLARollout:
        self._saved_rtc = getattr(self.ckpt.policy.config, "rtc_config", None)
        if self._saved_rtc is not None and self._saved_rtc.enabled:
            self.ckpt.policy.config.rtc_config = None
            self.ckpt.policy.init_rtc_processor()
        self._count_chunk_calls()
        self.ckpt.policy.reset()
        return self

    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        import torch

        ckpt = self.ckpt
        source = core_feed if core_feed is not None else self._last_feed
        if core_feed is not None:
            self._last_feed = core_feed
        merged = {**source, **feed}
        batch = _lerobot_batch(ckpt, merged, image_format, task=self.task)
        noise = torch.from_numpy(np.ascontiguousarray(core_feed[NOISE])) if core_feed is not None else None
        with torch.inference_mode():
            action = ckpt.policy.select_action(batch, noise=noise)
            return np.asarray(ckpt.postprocessor(action).detach().cpu().numpy(), dtype=np.float32)

    def select_lerobot(self, observation: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        """``policy-export eval``'s eager side: the env's observation (its task included) through LeRobot's
        preprocessor (which tokenizes the task) and ``select_action`` on the episode's noise."""
        import torch

        ckpt = self.ckpt
        noise = torch.from_numpy(np.ascontiguousarray(core_feed[NOISE])) if core_feed is not None else None
        with torch.inference_mode():
            action = ckpt.policy.select_action(dict(ckpt.preprocessor(observation)), noise=noise)
            return np.asarray(ckpt.postprocessor(action).detach().cpu().numpy(), dtype=np.float32)

    _last_feed: dict[str, np.ndarray] = {}  # noqa: RUF012  # replaced per instance on the first chunk

    def __exit__(self, *exc: object) -> None:
        self._stop_counting()
        if self._saved_rtc is not None:
            self.ckpt.policy.config.rtc_config = self._saved_rtc
            self.ckpt.policy.init_rtc_processor()
