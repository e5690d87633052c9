"""Dataset helpers. :mod:`.checks` (with :mod:`.cifar_layout`, :mod:`.image_folder` and
:mod:`.coco_layout`) stops a run early when its dataset is missing or malformed.

Importing this package never imports mmpretrain or mmdet; the checks import them lazily, and
``type='mmdsnet.Coco2014Dataset'`` imports :mod:`.coco` (mmdet's CocoDataset) on first use.
"""
from . import cifar_layout, coco_layout, image_folder  # noqa: F401  (register the checks)
from .checks import (DatasetCheckError, check_datasets, find_problems, register_dataset_check,
                     set_data_root)
from .transforms import LoadImageOrSkip

__all__ = ['DatasetCheckError', 'check_datasets', 'find_problems', 'register_dataset_check',
           'set_data_root', 'LoadImageOrSkip']
