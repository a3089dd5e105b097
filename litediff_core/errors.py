"""User-facing errors: raised with a message a student can act on; the CLI and the app show
the message alone, never a traceback."""


class LiteDiffError(Exception):
    """Base class for errors whose message is meant for the user."""


class ModelSourceError(LiteDiffError):
    """A model source (embedded name, hub id, folder) cannot be loaded."""


class DataError(LiteDiffError):
    """A dataset cannot be found, downloaded or read."""


class MetricError(LiteDiffError):
    """A metric cannot be computed with what is available (e.g. missing Inception weights)."""
