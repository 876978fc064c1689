"""Errors caused by the user's input (data, config): shown as one clear message, without a traceback."""


class UserError(ValueError):
    """Bad input the user can fix; the message says what and where."""


class ConfigError(UserError):
    """A config value that composes but cannot work (a secret in the config, an impossible stage order...)."""


class TrainingDiverged(UserError):
    """A loss became NaN or infinite: the stage stops, its artifact is not written, finished stages stay cached."""
