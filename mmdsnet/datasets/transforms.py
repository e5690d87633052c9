"""Loading that survives a bad image in a dataset of a million."""
import logging
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS


@MMENGINE_TRANSFORMS.register_module()
class LoadImageOrSkip(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that skips an unreadable image with a logged warning.

    A corrupt, truncated or missing image makes ``LoadImageFromFile`` raise deep inside a data
    loader worker, and the whole run dies (possibly days in). Here the file is named in a
    warning and the transform returns None: MMEngine's datasets then draw another image in
    training. (A test pipeline must not skip images: MMEngine stops the run there, right after
    this warning, so the metric is never computed on a silently smaller set.) Registered in
    MMEngine's root registry, so mmdet and mmpretrain configs can both name it; same arguments as
    ``LoadImageFromFile``.
    """

    def transform(self, results: dict) -> Optional[dict]:
        try:
            return super().transform(results)
        except Exception as e:  # unreadable: corrupt bytes, truncated file, missing file
            print_log(f'skipping unreadable image {results.get("img_path")} '
                      f'({type(e).__name__}: {str(e).strip()[:200]}); replace or remove it. '
                      f'Training draws another image.', logger='current',
                      level=logging.WARNING)
            return None
