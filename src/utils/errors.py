"""Errors a user can act on. `src.run` prints them without a traceback and exits non-zero."""


class UserError(Exception):
    """A problem with the run's input that the user can fix (config, data, checkpoint)."""

    #: the process's exit status when it ends the run
    exit_code: int = 2
    #: for a signal: the handler to pass it on to once everything is written (None: none)
    hand_over = None


class ConfigError(UserError):
    """A config value is unknown, of the wrong type or out of range."""


class DataError(UserError):
    """A dataset is missing, incomplete or corrupt."""


class DivergenceError(UserError):
    """Training produced a non-finite loss; the step was not applied."""


class RunInterrupted(UserError):
    """A signal stopped the run after saving a checkpoint; exit with 128 + the signal number.
    `hand_over` (if any) passes the signal on to the handler installed before the run (submitit's
    requeue on SIGUSR2); src.run calls it once everything is written."""

    def __init__(self, message: str, exit_code: int = 143, hand_over=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hand_over = hand_over
