"""End to end (slow): a classification checkpoint initialises the detector through the real
``Pretrained`` path, MMEngine's Runner trains a few iterations, mmdet's CocoMetric scores it.

The checkpoint is made the way the classification run makes it: mmpretrain's ImageClassifier
with a tiny DS2Net backbone, saved by ``mmengine.runner.save_checkpoint`` with the Runner's
``meta`` and ``message_hub`` (HistoryBuffer, numpy scalars). The detector run is
``tools/demo.py`` on a handful of generated images, its config inheriting from the demo config
with ``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=...)``.
"""
import glob
import json
import os.path as osp
import re
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmcv.ops', reason='detection needs mmcv built with its ops (mmdsnet[det])')
pytest.importorskip('mmdet', reason='detection needs mmdet (mmdsnet[det])')
pytest.importorskip('mmpretrain', reason='the classification checkpoint needs mmpretrain')

from mmdsnet.models.pretrained import PretrainedMismatchError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
import demo  # noqa: E402

BACKBONE = dict(type='mmdsnet.DS2Net', depth=26, base_channels=16)  # the demo's backbone


def _classification_checkpoint(path: Path) -> dict:
    """Build mmpretrain's ImageClassifier around the backbone and save it as the Runner does."""
    import numpy as np
    from mmengine.logging import MessageHub
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    clf = MODELS.build(dict(
        type='ImageClassifier', backbone=BACKBONE, neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=512,
                  loss=dict(type='CrossEntropyLoss'))))
    clf.init_weights()
    with torch.no_grad():  # "trained" weights: no zero-init left, every tensor recognisable,
        for p in clf.parameters():  # activations still of the initial scale
            p.mul_(1 + 0.1 * torch.randn_like(p)).add_(0.01 * torch.randn_like(p))
    hub = MessageHub.get_instance('test_det_e2e_cls')
    hub.update_scalar('train/loss', np.float64(2.3))
    hub.update_info('epoch', np.int64(1))
    save_checkpoint({'meta': dict(epoch=1, iter=10, seed=np.int64(0), mmengine_version='0.10.7',
                                  dataset_meta=dict(classes=tuple('abcde'))),
                     'state_dict': weights_to_cpu(clf.state_dict()),
                     'message_hub': hub.state_dict()}, str(path))
    return {k[len('backbone.'):]: v for k, v in clf.state_dict().items()
            if k.startswith('backbone.')}


def _config(tmp_path: Path, ckpt: Path, prefix: str) -> str:
    cfg = tmp_path / f'det_from_cls_{prefix.strip(".") or "none"}.py'
    # score_thr=0 keeps every box: after 2 iterations no score may pass 0.05, and CocoMetric
    # returns no numbers at all for a run without detections.
    cfg.write_text(
        f"_base_ = [{str(ROOT / 'configs/demo/faster-rcnn_ds2net-tiny_fpn_shapes.py')!r}]\n"
        f"model = dict(\n"
        f"    backbone=dict(frozen_stages=1, init_cfg=dict(\n"
        f"        _delete_=True, type='Pretrained', prefix={prefix!r},\n"
        f"        checkpoint={str(ckpt)!r})),\n"
        f"    test_cfg=dict(rcnn=dict(score_thr=0.0)))\n"
        f"train_dataloader = dict(batch_size=4)\n")
    return str(cfg)


@pytest.mark.slow
def test_classification_checkpoint_initialises_detector_and_cocometric_scores(tmp_path):
    ckpt = tmp_path / 'cls_epoch_1.pth'
    backbone_sd = _classification_checkpoint(ckpt)
    work = tmp_path / 'work'
    summary = demo.main(['--config', _config(tmp_path, ckpt, 'backbone.'), '--work-dir', str(work),
                         '--epochs', '1', '--num-train', '8', '--num-val', '4', '--num-vis', '2'])
    # The Runner's log shows every backbone tensor loaded through the Pretrained path.
    log = ''.join(Path(p).read_text() for p in glob.glob(str(work / '*' / '*.log')))
    n = len(backbone_sd)
    assert re.search(rf"loaded {n}/{n} backbone tensors from {re.escape(str(ckpt))} "
                     rf"\(prefix 'backbone\.'\)", log), log[-3000:]
    assert 'no Pretrained init_cfg' not in log
    # CocoMetric's three Table 8 numbers, before and after the few training iterations.
    for res in (summary['untrained'], summary['trained']):
        assert not res.get('no_detections')
        for key in ('coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP'):
            assert 0.0 <= res[key] <= 1.0
    assert osp.getsize(summary['predictions_png']) > 1000
    with open(work / 'demo_results.json') as f:
        assert json.load(f)['trained'] == summary['trained']
    # Training started from the checkpoint: the frozen stem still holds its weights exactly.
    from mmdsnet.models.pretrained import read_state_dict
    last = read_state_dict(glob.glob(str(work / 'epoch_*.pth'))[0])
    torch.testing.assert_close(last['backbone.conv1.weight'], backbone_sd['conv1.weight'])


@pytest.mark.slow
@pytest.mark.parametrize('prefix', ['model.', ''])
def test_wrong_prefix_stops_the_run(tmp_path, prefix):
    ckpt = tmp_path / 'cls_epoch_1.pth'
    _classification_checkpoint(ckpt)
    with pytest.raises(PretrainedMismatchError, match=rf"only 0/\d+ backbone tensors matched in "
                                                      rf"{re.escape(str(ckpt))} \(prefix "
                                                      rf"'{re.escape(prefix)}'\)"):
        demo.main(['--config', _config(tmp_path, ckpt, prefix), '--work-dir',
                   str(tmp_path / 'work'), '--epochs', '1', '--num-train', '4', '--num-val', '2',
                   '--no-eval-before'])
