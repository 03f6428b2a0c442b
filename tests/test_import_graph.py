"""No import cycles and no upward arrows in policy_export (counted by tests/import_graph.py, with grimp).

A cycle here is what a directory view shows as two siblings importing each other (lazy and
TYPE_CHECKING imports included); an upward arrow is an import against the layer order of
pyproject.toml's layers contract. Before the family seam there were 3 cycles (checkpoint <->
families <-> inputs <-> reference, runtime.client <-> runtime.realtime, runtime.host <->
runtime.history) and families sat in no layer (7 imports upward once placed where checkpoint
needed it).
"""

from __future__ import annotations

import grimp
import import_graph


def test_no_import_cycles():
    assert import_graph.cycles() == []


def test_no_upward_arrows_and_every_module_in_a_layer():
    assert import_graph.upward_arrows() == []


def test_the_counters_can_fail():
    """A planted cycle and a planted upward import are found (the counters are not vacuous)."""
    graph = grimp.build_graph("policy_export", include_external_packages=False, cache_dir=None)
    graph.add_import(importer="policy_export.runtime.history", imported="policy_export.runtime.host")
    graph.add_import(importer="policy_export.spec", imported="policy_export.runtime.client")
    assert ["policy_export.runtime.history", "policy_export.runtime.host"] in import_graph.cycles(graph)
    assert "policy_export.spec -> policy_export.runtime.client" in import_graph.upward_arrows(graph)
