"""Policy families' declarations (the light half of a family) and the one registry of families.

A family declares, for one LeRobot policy ``type``: its exported signature (each input's role,
shape, dtype and units), its host side and its own metadata fields (:class:`Declaration`).
Shared code (checkpoint reading, inputs, the runtime, Triton configs, the artifact checks) reads
that declaration and never names a family. The toolchain half of a family (core builder,
LeRobot reference) is :mod:`policy_export.families`, registered with the same
:func:`policy_export.families.register`. Plain Python: importing this loads no torch.
"""

from __future__ import annotations

from policy_export.declarations.act import ACTDeclaration
from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.declarations.diffusion import DiffusionDeclaration
from policy_export.declarations.pi import PiDeclaration
from policy_export.declarations.smolvla import SmolVLADeclaration
from policy_export.errors import BadInputError
from policy_export.spec import (
    ACTION_DIM,
    CHUNK,
    STATE_DIM,
    ArtifactMetadata,
    PolicySpec,
    Signature,
    action_chunk_output,
)

__all__ = [
    "Declaration",
    "Declared",
    "FieldRule",
    "apply_declared",
    "declaration_for",
    "family_problems",
    "register_declaration",
    "supported_policy_types",
    "unregister_declaration",
]

_DECLARATIONS: dict[str, Declaration] = {}


def register_declaration(declaration: Declaration) -> None:
    """Make ``declaration`` the one for its policy type (``policy_export.families.register`` calls this)."""
    if not declaration.policy_type:
        raise ValueError(f"{type(declaration).__name__} has no policy_type")
    _DECLARATIONS[declaration.policy_type] = declaration


def unregister_declaration(policy_type: str) -> None:
    _DECLARATIONS.pop(policy_type, None)


for _builtin in (
    ACTDeclaration(),
    DiffusionDeclaration(),
    SmolVLADeclaration(),
    PiDeclaration("pi0"),
    PiDeclaration("pi05"),
):
    register_declaration(_builtin)


def supported_policy_types() -> tuple[str, ...]:
    return tuple(_DECLARATIONS)


def declaration_for(policy_type: object, where: str = "") -> Declaration:
    """The declaration of ``policy_type``; an unsupported one is one line naming the supported ones."""
    if not isinstance(policy_type, str) or policy_type not in _DECLARATIONS:
        prefix = f"{where}: " if where else ""
        raise BadInputError(
            f"{prefix}policy type {policy_type!r} is not supported; policy-export handles {', '.join(_DECLARATIONS)}"
        )
    return _DECLARATIONS[policy_type]


def apply_declared(common: PolicySpec, declared: Declared) -> PolicySpec:
    """The full spec: the common part with the family's chunk, signature, host and own fields."""
    dims = {
        **declared.dims,
        STATE_DIM: common.state_dim,
        ACTION_DIM: common.action_dim,
        CHUNK: declared.chunk_size,
    }
    return common.replace(
        chunk_size=declared.chunk_size,
        n_action_steps=declared.n_action_steps,
        signature=Signature(declared.inputs, (action_chunk_output(),), dims),
        host=declared.host,
        family=dict(declared.family),
    )


def family_problems(meta: ArtifactMetadata) -> list[str]:
    """The family's own fields against its declared rules (empty for a family not registered here:
    its fields are then only carried, never read)."""
    declaration = _DECLARATIONS.get(meta.spec.policy_type)
    return [] if declaration is None else declaration.field_problems(meta.spec.family)
