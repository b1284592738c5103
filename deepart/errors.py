"""Errors that carry a message meant for the user: entry points print them without a traceback."""


class DeepArtError(Exception):
    """Base class: a problem the user can fix (bad config, missing file, unreadable checkpoint)."""


class ConfigError(DeepArtError):
    """A config key has an impossible value."""


class DataError(DeepArtError):
    """A dataset file is missing or malformed."""


class CheckpointError(DeepArtError):
    """A checkpoint is missing, unreadable or not a deepart checkpoint."""
