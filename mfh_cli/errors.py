"""User-facing errors: one clear line and an exit code, never a traceback."""


class MfhError(Exception):
    """An error the user can fix; the CLI prints `error: <message>` and exits with `exit_code`."""

    exit_code = 1


class ConfigError(MfhError):
    """A bad override, an unknown key or an invalid config value (exit code 2, like a usage error)."""

    exit_code = 2


class DataError(MfhError):
    """Unreadable, missing or invalid data: names the file, the column and the rule."""


class RunError(MfhError):
    """A training run that had to stop (NaN loss, interrupted): no run directory is left behind."""
