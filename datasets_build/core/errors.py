"""The project's user-facing errors.

Every error that a user can fix (bad input, a missing package, options that do not fit) subclasses
`UserError`; its message is one sentence that describes the values involved, not command-line
flags. The command line catches `UserError` only and prints `error: <message>`; anything else is
a bug and keeps its traceback. Each subclass also keeps the builtin base it had before (ValueError,
RuntimeError), so `except ValueError` in user code keeps working.
"""


class UserError(Exception):
    """A problem the user can fix; the message is one clear sentence."""


class MissingDependency(UserError, RuntimeError):
    """An optional package is not installed; the message gives the exact install command."""


class StepInputError(UserError, ValueError):
    """The built splits cannot feed a dataset step (no train split, nothing to learn from)."""
