"""The one error every part of the local stack raises when it cannot come up."""


class StartError(RuntimeError):
    """A part of the local stack did not come up. str(e) is one line naming the part (and its log)."""
