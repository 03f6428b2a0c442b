"""Policy families: everything that differs between ACT, Diffusion Policy, ... in one place each.

A family module describes, for one LeRobot policy ``type`` (``config.json``'s ``type``):

- the spec fields read from the policy config (:meth:`Family.spec_fields`, with the
  family's own bad-input checks);
- the stateless core (:meth:`Family.build_core`, around the module in ``wrappers/``);
- LeRobot's own reference: one chunk (:meth:`Family.reference_chunk`) and its stateful
  ``select_action`` for rollouts (:meth:`Family.reference_rollout`);
- the host shim settings to roll out with (:meth:`Family.rollout_modes`);
- the family's rows in ``inspect`` and its metadata fields (:meth:`Family.describe`).

Commands, exporters, runners, verify, rollout and triton ask :func:`family_for` and never
name a family. Adding one means a module here, one in ``wrappers/``, a registry line and tests.
This package imports no torch or lerobot at module level: ``checkpoint`` reads configs with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.spec import NoiseInput, PolicySpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from policy_export.checkpoint import LoadedCheckpoint
    from policy_export_wrappers.act import FeatureNormalizer


@dataclass(frozen=True)
class FamilyFields:
    """The family-dependent part of a :class:`~policy_export.spec.PolicySpec`."""

    chunk_size: int
    n_action_steps: int
    n_obs_steps: int | None = None
    noise_inputs: tuple[NoiseInput, ...] = ()
    family: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutMode:
    """One way of turning chunks into actions, as LeRobot's config would select it.

    ``settings`` is what :class:`~policy_export.runtime.PolicyClient` takes (``.make()``
    builds the shim); ``config`` is what the reference sets on LeRobot's policy config.
    """

    label: str
    #: runtime's ShimSettings | HistorySettings: not named here, since export (below runtime) imports families
    settings: Any
    config: dict[str, Any] = field(default_factory=dict)


class ReferenceRollout(AbstractContextManager["ReferenceRollout"]):
    """LeRobot's stateful policy switched to one :class:`RolloutMode`, counting its chunk calls.

    The count is how rollout parity checks that the host side asked for a chunk exactly when
    LeRobot did; it wraps ``predict_action_chunk`` on the instance (``select_action`` calls through
    it), and ``__exit__`` must put the class's method back (``_stop_counting``).
    """

    def __init__(self, ckpt: LoadedCheckpoint) -> None:
        self.ckpt = ckpt
        self.calls = 0

    def _count_chunk_calls(self) -> None:
        policy = self.ckpt.policy
        original = type(policy).predict_action_chunk

        def counted(batch: object, **kw: object) -> object:
            self.calls += 1
            return original(policy, batch, **kw)

        policy.predict_action_chunk = counted  # instance attribute: select_action calls through it

    def _stop_counting(self) -> None:
        del self.ckpt.policy.predict_action_chunk
        self.ckpt.policy.reset()

    def reset(self) -> None:
        self.ckpt.policy.reset()

    @abstractmethod
    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        """One control step in robot units. ``core_feed`` is what the candidate's core was given
        at this step (None when it was not called): a sampling family takes its noise from it."""


class Family(ABC):
    """One policy family's description on the toolchain side."""

    policy_type: str = ""
    #: What ``--exporter auto`` means for this family: "auto" (dynamo, legacy as the fallback) or "legacy".
    onnx_exporter: str = "auto"

    def check_config(self, raw: dict[str, Any], config_path: Path) -> None:
        """Refuse, in one line, what the family cannot export, from ``config.json`` before LeRobot parses it."""
        return None  # most families: LeRobot's own config checks suffice

    @abstractmethod
    def spec_fields(self, cfg: Any, config_path: Path) -> FamilyFields:  # cfg: LeRobot's PreTrainedConfig subclass
        """Read (and check) the family's fields from LeRobot's policy config."""

    @abstractmethod
    def build_core(self, ckpt: LoadedCheckpoint, image_format: str) -> torch.nn.Module:
        """The eval-mode stateless core (a ``torch.nn.Module``) with normalization baked in."""

    def for_tracing(self, core: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        """What the TorchScript-based exporters (``torch.jit.trace``, ONNX's legacy exporter) trace.

        The core itself for a straight-line network. A family whose core loops (Diffusion's
        denoising steps) returns a ``torch.jit.ScriptModule`` in which the loop is kept as a
        loop; the exporters use it as it is instead of tracing (and so unrolling) ``core``.
        """
        return core

    @abstractmethod
    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """LeRobot's preprocessor -> chunk prediction -> postprocessor on the core's inputs."""

    @abstractmethod
    def rollout_modes(self, spec: PolicySpec) -> list[RolloutMode]:
        """The shim settings a rollout check covers for this checkpoint."""

    @abstractmethod
    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout: ...

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        """Family rows for ``inspect`` (name, value)."""
        return [(k, "off" if v is None else str(v)) for k, v in spec.family.items()]


#: ``config.json`` ``type`` -> ``module:class`` of its family (imported on first use).
REGISTRY = {
    "act": "policy_export.families.act:ACTFamily",
    "diffusion": "policy_export.families.diffusion:DiffusionFamily",
}
_loaded: dict[str, Family] = {}


def feature_normalizer(ckpt: LoadedCheckpoint, key: str, stats: dict, inverse: bool) -> FeatureNormalizer:
    """LeRobot's (un)normalization of one feature as a torch module (the wrappers' ``FeatureNormalizer``), from the checkpoint's stats: shared by every family's core builder."""
    import torch

    from policy_export_wrappers.act import FeatureNormalizer

    mode = ckpt.spec.normalization.get(key, "IDENTITY")
    tensors = {k: torch.from_numpy(v) for k, v in stats.get(key, {}).items()} if mode != "IDENTITY" else None
    return FeatureNormalizer(mode, tensors, inverse=inverse, eps=ckpt.eps)


def core_normalizers(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """The normalization every core bakes in (state, each camera, the action's inverse), as the
    keyword arguments the wrappers' cores take."""
    from policy_export.checkpoint import ACTION_KEY

    spec = ckpt.spec
    return {
        "state_normalizer": feature_normalizer(ckpt, spec.state_key, ckpt.input_stats, inverse=False),
        "image_normalizers": [feature_normalizer(ckpt, c.key, ckpt.input_stats, inverse=False) for c in spec.cameras],
        "action_unnormalizer": feature_normalizer(ckpt, ACTION_KEY, ckpt.output_stats, inverse=True),
    }


def _registry() -> dict[str, Family]:
    if len(_loaded) != len(REGISTRY):
        import importlib

        for name, target in REGISTRY.items():
            module, cls = target.split(":")
            _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded


def supported_policy_types() -> tuple[str, ...]:
    return tuple(_registry())


def family_for(policy_type: str | None, where: str = "") -> Family:
    """The family of ``policy_type``; an unsupported one is one line naming the supported ones."""
    families = _registry()
    if policy_type not in families:
        prefix = f"{where}: " if where else ""
        raise BadInputError(
            f"{prefix}policy type {policy_type!r} is not supported; policy-export handles {', '.join(families)}"
        )
    return families[policy_type]


def iter_families() -> Iterator[Family]:
    yield from _registry().values()
