"""Report: read result files, aggregate over seeds, render tables and figures. Never imports torch.

`run_report` and `ReportSummary` (from `build`) load on first use, so importing `mfh_cli.report.render` alone stays
as light as pandas and rich."""

from __future__ import annotations

LAZY_NAMES = ("run_report", "ReportSummary")


def __getattr__(name: str):
    if name in LAZY_NAMES:
        from mfh_cli.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'mfh_cli.report' has no attribute '{name}'")
