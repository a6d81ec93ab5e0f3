"""Atomic output files: readers (and a crash) never see a half-written table, figure, study file or cache.

The one helper for every layer (data, studies, report): torch-free and importing nothing of mfh_cli, so any
module may use it without breaking the import direction. It raises OSError; each caller turns it into its own
message (an MfhError line, a warning). Run directories are swapped into place whole by engine/run.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary)` for a temporary path beside `path`, then rename it onto `path`; the temporary is
    removed whatever happens (a failed write leaves `path` as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return write_atomically(path, lambda temporary: temporary.write_text(text))
