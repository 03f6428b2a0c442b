"""One small runner per backend: ``activate`` / ``infer`` / ``deactivate``.

Verification, benchmarks and the runtime client all talk to artifacts through this one
interface, so adding a backend means adding one runner, not touching every caller.
"""

from policy_export.runners.base import Runner
from policy_export.runners.registry import open_runner

__all__ = ["Runner", "open_runner"]
