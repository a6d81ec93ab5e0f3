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


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop, keep what is finished, exit 128 + the signal's number (130, 143).

    A BaseException like KeyboardInterrupt, so `except Exception` never swallows it; not a KeyboardInterrupt, so
    Typer does not turn it into a silent exit 130 before the CLI can say what was kept."""

    def __init__(self, signum: int, message: str = "interrupted") -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
