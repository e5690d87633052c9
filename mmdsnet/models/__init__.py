from .backbones import DS2Net, DSNet
from .blocks import DSBasicBlock, DSBottle2neck, DSBottleneck, bottleneck_width
from .layers import DenseShortcut, build_shortcut_norm, gn_groups
from .stage import SHORTCUT_MODES, DSLayer

__all__ = [
    'DSNet', 'DS2Net', 'DSLayer', 'DSBasicBlock', 'DSBottleneck', 'DSBottle2neck',
    'DenseShortcut', 'build_shortcut_norm', 'gn_groups', 'bottleneck_width', 'SHORTCUT_MODES'
]
