"""The host side of a policy family, chosen in one place from the model's metadata.

Around the stateless core the host does two things that differ between policy families:
it builds the core's inputs for a control step (ACT: this step's observation; a family with
observation history or host-drawn noise keeps that state here), and it turns chunks into
actions (the shim: queue or temporal ensembling). ``PolicyClient`` and ``RealtimeClient``
both ask :func:`host_for`, so a new family is one class and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from policy_export.runtime.observation import Prepared
from policy_export.runtime.shim import ActionQueue, ShimSettings, TemporalEnsembler
from policy_export.spec import ArtifactMetadata

if TYPE_CHECKING:
    from policy_export.runtime.history import HistorySettings

#: Builds the core's named inputs for all robots (``None``) or the listed rows. It may run
#: later and on another thread (``RealtimeClient``'s worker), so it must not read shared state.
FeedFn = Callable[[np.ndarray | None], dict[str, np.ndarray]]


class Host:
    """ACT's host side: the core needs only the current observation."""

    def __init__(self, metadata: ArtifactMetadata, settings: ShimSettings) -> None:
        self.metadata = metadata
        self.settings = settings

    def feed(self, prep: Prepared) -> FeedFn:
        """Called once per control step on the caller's thread (keep it cheap: images are
        converted only when the returned builder runs, i.e. when a chunk is needed)."""
        return prep.feed

    def single(self, prep: Prepared) -> dict[str, np.ndarray]:
        """The core's inputs for one stateless chunk of this observation (``predict_chunk``)."""
        return prep.feed()

    def make_shim(self) -> ActionQueue | TemporalEnsembler:
        return self.settings.make()

    def reset(self, robot: int | None = None) -> None:
        """New episode for every robot or one (per-step host state only; the shim resets itself)."""


def host_for(
    metadata: ArtifactMetadata, settings: ShimSettings | HistorySettings | None = None, *, seed: int | None = None
) -> Host:
    """The host side for this model's policy family (``settings``: the shim's, default from the metadata).

    A core that takes an observation history (Diffusion Policy) gets the history + noise host
    (``seed``: its noise generator's); the others, ACT's.
    """
    if metadata.spec.n_obs_steps is not None:
        from policy_export.runtime.history import HistoryHost, HistorySettings

        # settings, when given, are those of the model's own family (PolicyClient's callers pass them from it)
        return HistoryHost(
            metadata, cast("HistorySettings", settings) or HistorySettings.from_spec(metadata.spec), seed=seed
        )
    return Host(metadata, cast(ShimSettings, settings) or ShimSettings.from_spec(metadata.spec))
