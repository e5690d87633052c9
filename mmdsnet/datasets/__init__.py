"""Dataset helpers. :mod:`.checks` and :mod:`.coco_layout` stop a run early when its dataset is
missing or malformed.

Importing this package never imports mmpretrain or mmdet; the checks import them lazily, and
``type='mmdsnet.Coco2014Dataset'`` imports :mod:`.coco` (mmdet's CocoDataset) on first use.
"""
from . import coco_layout  # noqa: F401  (registers the COCO check)
from .checks import (DatasetCheckError, check_datasets, find_problems, register_dataset_check,
                     set_data_root)
from .transforms import LoadImageOrSkip

__all__ = ['DatasetCheckError', 'check_datasets', 'find_problems', 'register_dataset_check',
           'set_data_root', 'LoadImageOrSkip']
