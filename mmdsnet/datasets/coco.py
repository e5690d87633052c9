"""``Coco2014Dataset``: mmdet's CocoDataset that checks the COCO folder it reads.

Configs name it ``type='mmdsnet.Coco2014Dataset'``; :data:`mmdsnet.registry.DATASETS` imports this
module (and so mmdet) on that first lookup: ``import mmdsnet`` alone never imports mmdet.
The checks themselves are in :mod:`mmdsnet.datasets.coco_layout`.
"""
import json
import logging
import os.path as osp
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmengine.logging import print_log

from ..registry import register_dataset
from ..utils import preview
from .checks import is_remote
from .coco_layout import (AUDIT_KINDS, LAYOUT_HINT, CocoAnnotationError, audit_annotations,
                          check_ann_file, check_images, check_img_dir, describe_audit,
                          unusable_annotations)

__all__ = ['Coco2014Dataset']


@register_dataset
class Coco2014Dataset(CocoDataset):
    """mmdet's ``CocoDataset`` that checks the COCO layout before loading it.

    Before pycocotools reads the json, a missing annotation file or image folder is named
    (with what its parent folder holds); after, the images the json lists are counted on disk
    and a run with missing images stops with both counts. Doubtful annotations (boxes outside
    their image, unknown categories ...) are counted in one warning, and a json of which no
    annotation can train stops the run. Remote paths (``s3://...``) are not checked. Same
    arguments as ``CocoDataset``, plus:

    Args:
        verify_images (bool): Count the listed images on disk (one ``listdir``).
            Defaults to True.
    """

    def __init__(self, *args, verify_images: bool = True, **kwargs) -> None:
        self.verify_images = verify_images
        super().__init__(*args, **kwargs)

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        # mmdet's load_data_list calls this for every image while self.coco exists, and deletes
        # self.coco when done: keep a handle for the audit in load_data_list.
        self._parsed_coco = self.coco
        return super().parse_data_info(raw_data_info)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img', '') or self.data_root
        local = self.backend_args is None and not is_remote(self.ann_file)
        if local:
            check_ann_file(self.ann_file)
            check_img_dir(img_dir, ann_file=self.ann_file)
        try:
            data_list = super().load_data_list()
        except json.JSONDecodeError as e:
            size = osp.getsize(self.ann_file) if local else '?'
            raise CocoAnnotationError(
                f'{self.ann_file} is not valid JSON ({e.msg} at line {e.lineno}, column '
                f'{e.colno}; byte {e.pos} of {size}): a truncated download or copy? '
                f'Re-extract it from annotations_trainval2014.zip. {LAYOUT_HINT}') from None
        coco = self.__dict__.pop('_parsed_coco', None)  # None: the json lists no image
        if coco is not None:
            self._audit(coco)
        if local and self.verify_images:
            names = [osp.relpath(d['img_path'], img_dir) for d in data_list]
            check_images(names, img_dir, self.ann_file)
        return data_list

    def _audit(self, coco) -> None:
        """Warn about doubtful annotations; stop when none of them can train."""
        found = audit_annotations(coco.anns.values(), coco.imgs, self.cat_ids)
        total = len(coco.anns)
        if total and unusable_annotations(found) == total:
            counts = '; '.join(f'{len(ids)} with {kind}, {AUDIT_KINDS[kind]}'
                               for kind, ids in found.items())
            cats = ''
            if 'unknown category id' in found:
                names = sorted(c['name'] for c in coco.cats.values())
                cats = (f' Its categories {preview(names)} are not the dataset\'s classes '
                        f'{preview(self.metainfo["classes"])}: set metainfo=dict(classes=...) '
                        f'to its category names, or use a COCO annotation file.')
            raise CocoAnnotationError(
                f'{self.ann_file}: none of its {total} annotations can train ({counts}).{cats}')
        warning = describe_audit(found, self.ann_file, total)
        if warning:
            print_log(warning, logger='current', level=logging.WARNING)
