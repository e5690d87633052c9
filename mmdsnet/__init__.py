"""mmdsnet: DSNet and DS2Net backbones for the OpenMMLab stack.

``import mmdsnet`` (what ``custom_imports=dict(imports=['mmdsnet'])`` does) registers every model
and makes MMEngine's checkpoints load under torch>=2.6 with ``weights_only=True``
(:func:`mmdsnet.compat.patch_torch_load`), so mmdet's and mmpretrain's own tools can resume too.
It also has mmpretrain's ``list_models`` / ``get_model`` find our configs by name, on their first
lookup (:func:`mmdsnet.utils.model_index.install_lazy_registration`). It never imports mmdet or
mmpretrain.
"""
from . import datasets, models  # noqa: F401  (registers the backbones and transforms)
from .compat import patch_torch_load
# The hooks tools/train.py writes into a work dir's config copy (AtomicCheckpointHook ...), so
# that upstream tools given that copy (mmpretrain's confusion_matrix.py ...) find them.
from .engine import hooks  # noqa: F401
from .utils.model_index import install_lazy_registration
from .version import __version__

patch_torch_load()
install_lazy_registration()

__all__ = ['__version__']
