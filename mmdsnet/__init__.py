"""mmdsnet: DSNet and DS2Net backbones for the OpenMMLab stack.

``import mmdsnet`` (what ``custom_imports=dict(imports=['mmdsnet'])`` does) registers every model.
It never imports mmdet or mmpretrain.
"""
from .version import __version__
from . import models  # noqa: F401  (registers the backbones)

__all__ = ['__version__']
