"""Smoke run of ``tinyodl bench sparse_update --quick`` and its JSON."""

from __future__ import annotations

import json

from tinyodl.cli import main as cli_main
from tinyodl.sparse_update import UpdateScheme


def test_bench_sparse_update_quick(tmp_path):
    out = tmp_path / "sparse.json"
    assert cli_main(["bench", "sparse_update", "--quick", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "command", "rows", "summary"}
    s = doc["summary"]
    assert {r["search"] for r in s["searches"]} == {"exact", "evolutionary"}
    for row in s["searches"]:
        assert row["paper_bytes"] <= row["budget_kb"] * 1024
        # the analytic replay models the int8 backward kernels' scratch on each backend
        assert 0.85 < row["measured_bytes"] / row["analytic_bytes"] < 1.25
    by_budget = {}
    for row in s["searches"]:
        by_budget.setdefault(row["budget_kb"], {})[row["search"]] = row
    for pair in by_budget.values():  # exact is optimal; evolution can only tie it
        assert pair["evolutionary"]["gain"] <= pair["exact"]["gain"] + 1e-12
    UpdateScheme.from_dict(s["found_scheme"])  # a valid scheme
    assert {r["scheme_name"] for r in doc["rows"]} == {"classifier_only", "found"}
    # reusing the contribution table gives the same searches
    again = tmp_path / "again.json"
    assert (
        cli_main(
            ["bench", "sparse_update", "--quick", "--contributions", str(out), "--json", str(again)]
        )
        == 0
    )
    assert json.loads(again.read_text())["summary"]["found_scheme"] == s["found_scheme"]
