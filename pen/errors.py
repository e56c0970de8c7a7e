"""The exceptions pen raises for the user's mistakes (not for its own bugs)."""


class PenError(Exception):
    """Something the user must fix; the message is one line, shown as is."""


class ConfigError(PenError):
    """A bad command line, backend spec, listen address or startup setting."""


class CommandError(PenError):
    """A control/config command that cannot be applied; nothing was changed."""
