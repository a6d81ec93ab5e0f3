"""mfh: an experiment runner for Multi-Faceted Hierarchical multi-task recommendation."""

__version__ = "0.1.0"
