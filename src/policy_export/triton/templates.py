"""The files of ``model_repository_templates/``, shipped as package data.

Read through ``importlib.resources`` so an installed wheel (not just a source checkout)
finds them: the config header, the ``--backend python`` model and the test stand-in.
"""

from __future__ import annotations

from importlib import resources

from policy_export.errors import UnavailableError

TEMPLATES_PACKAGE = "policy_export_triton_templates"


def template_text(name: str) -> str:
    """A file shipped in model_repository_templates/ (installed as package data)."""
    try:
        return resources.files(TEMPLATES_PACKAGE).joinpath(name).read_text()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UnavailableError(
            f"template {name} not found in package {TEMPLATES_PACKAGE}; reinstall policy-export"
        ) from exc
