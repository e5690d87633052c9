"""mmdsnet's registries, reachable from mmdet and mmpretrain configs without importing either.

Configs name our classes by their scoped name, ``type='mmdsnet.DSNet'``,
``type='mmdsnet.Coco2014Dataset'``: mmengine imports ``mmdsnet.registry`` and finds our child
registry under its root, whatever the config's ``default_scope`` is (the child registries below
import their ``locations`` on first use, so the COCO dataset, which needs mmdet, is imported only
by configs that name it).

The plain name after ``custom_imports=dict(imports=['mmdsnet'])`` (``type='DSNet'``, what mmdet's
and mmpretrain's custom-backbone docs teach) works too: an unscoped name is searched in the
caller's registry and then in its ancestors, so :func:`register_model` and
:func:`register_dataset` also place the class in mmengine's root registry, the common ancestor of
mmdet's and mmpretrain's. This keeps ``import mmdsnet`` free of ``import mmdet`` (whose import
asserts ``mmcv<2.2``), so classification users never need mmdet.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmdsnet',
                  locations=['mmdsnet.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmdsnet',
                    locations=['mmdsnet.datasets.coco'])
# 'Pretrained' here is mmdsnet.models.pretrained.StrictPretrained: DSNet resolves its init_cfg in
# this scope; any other model can ask for it as type='mmdsnet.Pretrained'.
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS,
                               scope='mmdsnet', locations=['mmdsnet.models.pretrained'])
# The pre-run dataset checks of tools/train.py and tools/test.py, by dataset type
# (mmdsnet.datasets.checks).
DATASET_CHECKS = Registry('dataset check', scope='mmdsnet',
                          locations=['mmdsnet.datasets.checks', 'mmdsnet.datasets.coco_layout'])


def register_model(cls):
    """Register ``cls`` in mmdsnet's scope and in mmengine's root (see module docstring)."""
    MODELS.register_module(module=cls)
    MMENGINE_MODELS.register_module(module=cls)
    return cls


def register_dataset(cls):
    """Register ``cls`` in mmdsnet's scope and in mmengine's root (see module docstring)."""
    DATASETS.register_module(module=cls)
    MMENGINE_DATASETS.register_module(module=cls)
    return cls
