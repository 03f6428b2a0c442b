"""Policy families: everything that differs between ACT, Diffusion Policy, ... in one place each.

Each family is two halves: its declaration (:mod:`policy_export.declarations`: signature, host
side, own metadata fields; plain Python, read by the runtime's layers too) and its toolchain
:class:`Family` here (core builder, LeRobot reference, rollout modes; torch imported lazily).
:func:`register` adds a family (both halves) at run time; the built-in ones are registered on
import. Nothing else names a family. See ``docs/families.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policy_export.declarations import (
    declaration_for,
    register_declaration,
    supported_policy_types,
    unregister_declaration,
)
from policy_export.families.act import ACTFamily
from policy_export.families.base import Family, ReferenceRollout, RolloutMode, core_normalizers, feature_normalizer
from policy_export.families.diffusion import DiffusionFamily
from policy_export.families.pi import PiFamily
from policy_export.families.smolvla import SmolVLAFamily

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint

__all__ = [
    "Family",
    "ReferenceRollout",
    "RolloutMode",
    "core_normalizers",
    "eager_chunk",
    "family_for",
    "feature_normalizer",
    "register",
    "supported_policy_types",
    "unregister",
]

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
    """Add (or replace) a family: its declaration and its toolchain half, under its policy type."""
    register_declaration(family.declaration)
    _FAMILIES[family.policy_type] = family


def unregister(policy_type: str) -> None:
    """Remove a family registered at run time (tests)."""
    _FAMILIES.pop(policy_type, None)
    unregister_declaration(policy_type)


for _builtin in (ACTFamily(), DiffusionFamily(), SmolVLAFamily(), PiFamily("pi0"), PiFamily("pi05")):
    register(_builtin)


def family_for(policy_type: str | None, where: str = "") -> Family:
    """The family of ``policy_type``; an unsupported one is one line naming the supported ones."""
    declaration_for(policy_type, where)  # the one-line refusal
    assert policy_type is not None
    return _FAMILIES[policy_type]


def eager_chunk(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str = "float32") -> np.ndarray:
    """LeRobot's chunk in robot units on the core's inputs, as the checkpoint's family computes it."""
    return family_for(ckpt.spec.policy_type).reference_chunk(ckpt, feed, image_format)
