"""The one exception for user mistakes: the CLI prints its message and exits 2."""


class BadInput(Exception):
    """A mistake in the user's config, overrides or resources.

    Raised before anything is launched or written; the message names the key and what would be valid.
    """


class SweepFailed(Exception):
    """The sweep cannot go on, through no mistake in its input (a full disk, storage that cannot be read).

    The CLI prints its message, which says what happened, what was kept and what to do, and exits 1.
    """
