"""Optional extras (`pip install 'mfh-cli[tracking]'`, `'mfh-cli[cluster]'`): import one where it is needed, or
stop with one line naming the install that brings it.

Torch-free and importing nothing of mfh_cli but its errors, so every layer may use it."""

from __future__ import annotations

import importlib
from types import ModuleType

from mfh_cli.errors import MfhError


class MissingExtra(MfhError):
    """An optional package a command needs is not installed (or does not import)."""


def require(module: str, needed_by: str, extra: str) -> ModuleType:
    """Import `module` for `needed_by` (e.g. `tracking=mlflow`); when it does not import, raise one line naming
    `pip install 'mfh-cli[<extra>]'`. An ImportError from inside an installed package is reported the same way,
    with its own message, since reinstalling the extra is then the fix too."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(f"{needed_by} needs the optional module '{module}', which does not import ({error}): "
                           f"pip install 'mfh-cli[{extra}]'") from None
