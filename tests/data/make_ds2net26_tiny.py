"""How ds2net26-tiny_cifar10_old-keys{,_probe}.pth were written (2026-11-27, 2-core CPU dev box),
with the code of commit 1d19ef9, whose checkpoints hold the old dense-shortcut keys
(``layerK.norms.{i}``, ``layerK.{b}.inner_shortcut`` ...; tools/convert_checkpoint.py):

    mkdir /tmp/base && git archive 1d19ef9 | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base .venv/bin/python tests/data/make_ds2net26_tiny.py \
        tests/data/ds2net26-tiny_cifar10_old-keys.pth \
        tests/data/ds2net26-tiny_cifar10_old-keys_probe.pth

An mmpretrain ImageClassifier around a tiny DS2Net (DSNet + inner_shortcut, as configs wrote it
then), saved the way MMEngine's Runner saves (meta, message_hub with HistoryBuffer and numpy), and
its logits on a seeded input (tests/test_checkpoint_compat.py).
"""
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
from mmpretrain.registry import MODELS

import mmdsnet  # noqa: F401  (registers DSNet)

init_default_scope('mmpretrain')
torch.manual_seed(0)
model = MODELS.build(dict(
    type='ImageClassifier',
    backbone=dict(type='mmdsnet.DSNet', depth=26, stem='cifar', base_channels=8,
                  shortcut_norm_cfg=dict(type='GN', num_groups=4),
                  block_cfg=dict(inner_shortcut=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256,
              loss=dict(type='CrossEntropyLoss'))))
model.init_weights()
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from helpers import randomize  # noqa: E402  ("trained": random, recognisable, finite)

randomize(model, seed=1)
model.eval()
x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    logits = model(x, mode='tensor')
hub = MessageHub.get_instance('old_keys')
hub.update_scalar('train/loss', np.float64(2.3))
hub.update_info('iter', np.int64(10))
save_checkpoint({'meta': dict(epoch=1, iter=10, seed=np.int64(0), mmengine_version='0.10.7',
                              dataset_meta=dict(classes=tuple('abcdefghij'))),
                 'state_dict': weights_to_cpu(model.state_dict()),
                 'message_hub': hub.state_dict()}, sys.argv[1])
torch.save({'input': x, 'logits': logits}, sys.argv[2])
print(logits[0, :4], len(model.state_dict()))
