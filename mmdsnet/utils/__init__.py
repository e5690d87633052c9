from .env import collect_env

__all__ = ['collect_env']
