"""Report: read result files, aggregate over seeds, render tables and figures. Never imports torch."""
