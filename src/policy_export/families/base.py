"""The toolchain half of a policy family: core builder, LeRobot reference, rollout modes.

A family is its declaration (:class:`~policy_export.declarations.Declaration`: signature, host
side, own metadata fields, plain Python) plus this class (torch and LeRobot, imported lazily):

- the stateless core (:meth:`Family.build_core`, around the module in ``wrappers/``);
- LeRobot's own reference: one chunk (:meth:`Family.reference_chunk`) and its stateful
  ``select_action`` for rollouts (:meth:`Family.reference_rollout`);
- the host settings to roll out with (:meth:`Family.rollout_modes`).

Commands, exporters, verify, rollout and triton ask :func:`policy_export.families.family_for`
and never name a family. See ``docs/families.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.declarations import Declaration
from policy_export.spec import PolicySpec

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from policy_export.checkpoint import LoadedCheckpoint
    from policy_export_wrappers.act import FeatureNormalizer


@dataclass(frozen=True)
class RolloutMode:
    """One way of turning chunks into actions, as LeRobot's config would select it.

    ``spec`` is the checkpoint's spec with this mode's ``n_action_steps`` and host declaration
    (what :class:`~policy_export.runtime.PolicyClient` then runs); ``config`` is what the
    reference sets on LeRobot's policy config.
    """

    label: str
    spec: PolicySpec
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
        #: The language instruction of this rollout (a model with a tokenizer), given to LeRobot's own
        #: preprocessor; None for the others.
        self.task: str | None = None

    #: The policy method its ``select_action`` computes a chunk with (SmolVLA's skips ``predict_action_chunk``).
    chunk_method = "predict_action_chunk"

    def _count_chunk_calls(self) -> None:
        policy = self.ckpt.policy
        original = getattr(type(policy), self.chunk_method)

        def counted(batch: object, *args: object, **kw: object) -> object:
            self.calls += 1
            return original(policy, batch, *args, **kw)

        setattr(policy, self.chunk_method, counted)  # instance attribute: select_action calls through it

    def _stop_counting(self) -> None:
        delattr(self.ckpt.policy, self.chunk_method)
        self.ckpt.policy.reset()

    def reset(self) -> None:
        self.ckpt.policy.reset()

    @abstractmethod
    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        """One control step in robot units. ``core_feed`` is what the candidate's core was given
        at this step (None when it was not called): a sampling family takes its noise from it."""

    def select_lerobot(self, observation: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        """:meth:`select_action` on an observation already in LeRobot's form (its keys, float CHW tensors
        with a batch axis: what ``lerobot.envs.utils.preprocess_observation`` makes of a simulator's);
        ``policy-export eval`` drives the eager side through it."""
        raise NotImplementedError(f"{type(self).__name__} cannot be driven from LeRobot observations yet")


class Family(ABC):
    """One policy family's toolchain side; ``declaration`` is its light half."""

    declaration: Declaration
    #: What ``--exporter auto`` means for this family: "auto" (dynamo, legacy as the fallback) or "legacy".
    onnx_exporter: str = "auto"
    #: Module scopes ``quantize`` keeps in float (int8 of the rest): the layers whose rounding errors reach
    #: the actions directly with no averaging after them, and which cost little compute.
    quantize_float_scopes: tuple[str, ...] = ()
    #: More scopes kept in float by OpenVINO/NNCF int8 only (its activation quantizers are per tensor where
    #: ONNX Runtime's QDQ meets the same error bound without them).
    openvino_float_scopes: tuple[str, ...] = ()
    #: What ``quantize --precision int8`` uses without ``--runtime``: the faster of the two at equal accuracy,
    #: measured per family. ONNX Runtime QDQ unless measured otherwise: it quantizes every family's graph
    #: (NNCF's int8 fails on the VLA families' flow Loop).
    int8_runtime: str = "onnxruntime"

    @property
    def policy_type(self) -> str:
        return self.declaration.policy_type

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

    def write_sidecars(self, ckpt: LoadedCheckpoint, artifact: Path) -> list[Path]:
        """Files the robot needs beside an exported ``artifact`` (a language model's tokenizer); default none.
        Called once the artifact is complete, before it is moved into place."""
        return []

    @abstractmethod
    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """LeRobot's preprocessor -> chunk prediction -> postprocessor on the core's inputs."""

    def rollout_modes(self, spec: PolicySpec) -> list[RolloutMode]:
        """The host settings a rollout check covers for this checkpoint (default: the declared one)."""
        return [RolloutMode(f"rollout {spec.host.merge} n={spec.n_action_steps}", spec)]

    @abstractmethod
    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout: ...


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
    spec = ckpt.spec
    return {
        "state_normalizer": feature_normalizer(ckpt, spec.state_key, ckpt.input_stats, inverse=False),
        "image_normalizers": [feature_normalizer(ckpt, c.key, ckpt.input_stats, inverse=False) for c in spec.cameras],
        "action_unnormalizer": feature_normalizer(ckpt, spec.action_key, ckpt.output_stats, inverse=True),
    }
