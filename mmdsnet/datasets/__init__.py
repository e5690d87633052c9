"""Dataset helpers. :mod:`.checks` stops a run early when its dataset is missing or malformed.

Importing this package never imports mmpretrain or mmdet; the checks import them lazily.
"""
from .checks import (DATASET_CHECKS, DatasetCheckError, check_datasets, find_problems,
                     register_dataset_check)
from .transforms import LoadImageOrSkip

__all__ = ['DATASET_CHECKS', 'DatasetCheckError', 'check_datasets', 'find_problems',
           'register_dataset_check', 'LoadImageOrSkip']
