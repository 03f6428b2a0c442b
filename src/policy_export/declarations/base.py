"""What a policy family declares: its exported signature, its host side and its own metadata fields.

This is the light half of a family (plain Python, no torch): ``checkpoint`` asks it to read a
LeRobot config into a :class:`~policy_export.spec.PolicySpec`, and every artifact reader asks it
to check the family's own metadata fields. The heavy half (core builder, LeRobot reference,
rollout modes) is :class:`policy_export.families.Family`, which names its declaration.
See ``docs/families.md``.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from policy_export.spec import HostDecl, PolicySpec, TensorDecl


@dataclass(frozen=True)
class FieldRule:
    """Type and bounds of one of a family's own metadata fields (``spec.family[name]``).

    ``kind``: "int", "float", "str", "int_list" (e.g. a crop shape), "bool"; ``optional``:
    null allowed; ``lo`` / ``hi``: inclusive bounds (ints and floats, and each entry of a list);
    ``choices``: the allowed words of a "str" field.
    """

    kind: str
    optional: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    max_len: int = 8

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if value is None:
            return None if self.optional else "is null"
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"is {value!r}, not true/false"
        if self.kind == "str":
            if not isinstance(value, str):
                return f"is {value!r}, not a string"
            return None if not self.choices or value in self.choices else f"is {value!r}, not one of {self.choices}"
        if self.kind == "int_list" and (not isinstance(value, list) or len(value) > self.max_len):
            return f"is {value!r}, not a list of at most {self.max_len} integers"
        items: list[Any] = value if isinstance(value, list) else [value]
        for x in items:
            integral = isinstance(x, int) and not isinstance(x, bool)
            if self.kind in ("int", "int_list") and not integral:
                return f"is {value!r}, not an integer" + (" list" if self.kind == "int_list" else "")
            if self.kind == "float" and (not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x)):
                return f"is {value!r}, not a finite number"
            if (self.lo is not None and x < self.lo) or (self.hi is not None and x > self.hi):
                return f"= {value!r} is outside [{self.lo}, {self.hi}]"
        return None


@dataclass(frozen=True)
class Declared:
    """What :meth:`Declaration.declare` reads from a LeRobot config: the family-dependent part of a spec.

    ``inputs``: the core's inputs in call order (use :func:`~policy_export.spec.observation_inputs`
    for state and cameras); the output is always ``action_chunk`` ``[batch, chunk, action_dim]``.
    ``dims``: the family's own symbolic dims (``state_dim``, ``action_dim`` and ``chunk`` are
    filled in from the common fields).
    """

    chunk_size: int
    n_action_steps: int
    inputs: tuple[TensorDecl, ...]
    dims: dict[str, int] = field(default_factory=dict)
    host: HostDecl = field(default_factory=HostDecl)
    family: dict[str, Any] = field(default_factory=dict)


class Declaration(ABC):
    """One policy family's declaration (light: importable without torch)."""

    #: ``config.json``'s ``type``.
    policy_type: str = ""
    #: The family's own metadata fields (``spec.family``): name -> rule. Unknown names are refused.
    fields: ClassVar[dict[str, FieldRule]] = {}

    def check_config(self, raw: dict[str, Any], config_path: Path) -> None:
        """Refuse, in one line, what the family cannot export, from ``config.json`` before LeRobot parses it."""
        return None

    def building(self, root: Path) -> AbstractContextManager[None]:
        """A context LeRobot builds the checkpoint at ``root`` in (default: none). pi0 / pi0.5 use it for
        test-size checkpoints, whose sizes LeRobot's variant names cannot express."""
        return contextlib.nullcontext()

    @abstractmethod
    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        """The family's part of the spec, from LeRobot's policy config ``cfg`` and the common part
        ``spec`` (state, cameras, action; its signature is still the default)."""

    def describe(self, spec: PolicySpec) -> list[tuple[str, str]]:
        """Family rows for ``inspect`` (name, value)."""
        return [(k, "off" if v is None else str(v)) for k, v in spec.family.items()]

    def field_problems(self, family: dict[str, Any]) -> list[str]:
        """Every way ``family`` (a spec's own fields) breaks this family's declared rules."""
        problems = [
            f"spec.family.{k} is not a field of the {self.policy_type} family" for k in family if k not in self.fields
        ]
        for name, rule in self.fields.items():
            if name not in family and not rule.optional:
                problems.append(f"spec.family.{name} is missing")
            elif name in family and (why := rule.problem(family[name])) is not None:
                problems.append(f"spec.family.{name} {why}")
        return problems
