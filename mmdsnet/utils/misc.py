"""Small helpers the messages of several modules share."""
from typing import Iterable, List


def preview(items: Iterable, n: int = 5) -> list:
    """The first ``n`` items, plus ``'... (k more)'`` when there are more (for messages)."""
    items: List = list(items)
    return items[:n] + ([f'... ({len(items) - n} more)'] if len(items) > n else [])
