"""Utilities. ``collect_env`` is imported on first use, so that ``python -m mmdsnet.utils.env``
runs its module once (an eager import here made runpy warn that it was already imported)."""
from .misc import preview


def __getattr__(name: str):
    if name == 'collect_env':
        from .env import collect_env
        return collect_env
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['collect_env', 'preview']
