"""Errors a user can fix, reported as one line and a non-zero exit."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


def listing(items, limit: int = 5) -> str:
    """The first `limit` items joined by commas, then "and N more": a list that fits one line."""
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(str(item) for item in items[:limit]) + more
