"""The one exception for user mistakes: the CLI prints its message and exits 2."""


class BadInput(Exception):
    """A mistake in the user's config, overrides or resources.

    Raised before anything is launched or written; the message names the key and what would be valid.
    """
