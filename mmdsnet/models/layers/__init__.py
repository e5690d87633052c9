from .dense_shortcut import DenseShortcut, build_shortcut_norm, gn_groups

__all__ = ['DenseShortcut', 'build_shortcut_norm', 'gn_groups']
