"""mmdsnet: DSNet and DS2Net backbones for the OpenMMLab stack.

``import mmdsnet`` (what ``custom_imports=dict(imports=['mmdsnet'])`` does) registers every model
and makes MMEngine's checkpoints load under torch>=2.6 with ``weights_only=True``
(:func:`mmdsnet.compat.patch_torch_load`), so mmdet's and mmpretrain's own tools can resume too.
It never imports mmdet or mmpretrain.
"""
from . import datasets, models  # noqa: F401  (registers the backbones and transforms)
from .compat import patch_torch_load
from .version import __version__

patch_torch_load()

__all__ = ['__version__']
