"""Errors a user can fix, reported as one line and a non-zero exit."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""
