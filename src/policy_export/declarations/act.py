"""ACT's declaration: state + cameras -> action_chunk; an action queue, or temporal ensembling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.spec import HostDecl, PolicySpec


class ACTDeclaration(Declaration):
    policy_type = "act"
    fields: ClassVar[dict[str, FieldRule]] = {}  # ACT's one setting (ensembling) is the host's: HostDecl.ensemble_coeff

    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        coeff = cfg.temporal_ensemble_coeff
        if coeff is not None and isinstance(coeff, float) and math.isnan(coeff):
            coeff = None
        return Declared(
            chunk_size=int(cfg.chunk_size),
            n_action_steps=int(cfg.n_action_steps),
            inputs=spec.signature.inputs,
            host=HostDecl(ensemble_coeff=None if coeff is None else float(coeff)),
        )

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        coeff = spec.host.ensemble_coeff
        return [("temporal_ensemble_coeff", "off" if coeff is None else f"{coeff:g}")]
