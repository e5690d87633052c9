"""mmdsnet's registry, reachable from mmdet and mmpretrain configs without importing either.

Configs can name our classes in two ways:

* ``type='mmdsnet.DSNet'``: the scoped name. mmengine imports ``mmdsnet.registry`` and finds our
  child registry under its root, whatever the config's ``default_scope`` is.
* ``type='DSNet'`` after ``custom_imports=dict(imports=['mmdsnet'])``: what mmdet's and mmpretrain's
  custom-backbone docs teach. An unscoped name is searched in the caller's registry and then in its
  ancestors, so :func:`register_model` also places the class in mmengine's root ``MODELS``, the
  common ancestor of mmdet's and mmpretrain's registries. This keeps ``import mmdsnet`` free of
  ``import mmdet`` (whose import asserts ``mmcv<2.2``), so classification users never need mmdet.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdsnet',
                  locations=['mmdsnet.models'])


def register_model(cls):
    """Register ``cls`` in mmdsnet's scope and in mmengine's root (see module docstring)."""
    MODELS.register_module(module=cls)
    MMENGINE_MODELS.register_module(module=cls)
    return cls
