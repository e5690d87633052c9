"""``tools/test.py --out results.json``: the raw predictions as JSON instead of a pickle."""
from typing import Any, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.fileio import dump
from mmengine.logging import print_log
from mmengine.registry import METRICS
from mmengine.structures import BaseDataElement

#: Ground truth that mmdet's ``DumpDetResults`` leaves out of the dump (it is in the dataset).
DET_GROUND_TRUTH = ('gt_instances', 'ignored_instances', 'gt_panoptic_seg')


def to_jsonable(obj: Any) -> Any:
    """Tensors and arrays as (nested) lists, numpy scalars as numbers, bytes (mask RLE) as text."""
    if isinstance(obj, BaseDataElement):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode('ascii')
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# Registered in MMEngine's root METRICS: mmdet's and mmpretrain's registries find it by name, so
# the config stays plain text.
@METRICS.register_module()
class DumpJsonResults(BaseMetric):
    """Dump every prediction to a ``.json`` file: what MMEngine's ``DumpResults`` (and mmdet's
    ``DumpDetResults``) write to a pickle, one dict per sample (``pred_score``/``pred_label``,
    or ``pred_instances`` with ``bboxes``/``scores``/``labels``, plus ``img_path`` and the image
    meta), with detection ground truth left out as mmdet leaves it out.

    Args:
        out_file_path (str): Output file; must end with ``.json``.
        collect_device (str): Where results from all processes are gathered. Defaults to
            ``'cpu'``.
        collect_dir (str, optional): Temporary folder for ``collect_device='cpu'``.
            Defaults to None.
    """

    def __init__(self, out_file_path: str, collect_device: str = 'cpu',
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, collect_dir=collect_dir)
        if not out_file_path.endswith('.json'):
            raise ValueError(f'DumpJsonResults writes .json files, got {out_file_path}')
        self.out_file_path = out_file_path

    def process(self, data_batch: Any, predictions: Sequence[dict]) -> None:
        for sample in predictions:
            sample = dict(sample.to_dict() if isinstance(sample, BaseDataElement) else sample)
            for key in DET_GROUND_TRUTH:
                sample.pop(key, None)
            pred = sample.get('pred_instances')
            if isinstance(pred, dict) and 'masks' in pred:  # mmdet's RLE, as DumpDetResults
                from mmdet.structures.mask import encode_mask_results
                pred = dict(pred, masks=encode_mask_results(
                    torch.as_tensor(pred['masks']).cpu().numpy()))
                sample['pred_instances'] = pred
            self.results.append(to_jsonable(sample))

    def compute_metrics(self, results: list) -> dict:
        dump(results, self.out_file_path)
        print_log(f'Results have been saved to {self.out_file_path}.', logger='current')
        return {}
