"""Tiny classification runs shared by the tool tests (trained once per test session).

The data is generated: a few hundred 32x32 images of four classes that survive the random crop
and flip (three classes have one dominant colour channel, one has horizontal stripes), pickled in
exactly the layout mmpretrain's ``CIFAR100`` reads (``cifar-100-python/{train,test}``).
mmpretrain checks the md5 of the official files; a tiny helper module (``PATCH_MODULE``),
imported through the config's ``custom_imports``, sets those md5s to None. The configs are the real
DSNet50 0.25x CIFAR-100 config shrunk to DSNet-26 at 1/8 width (and its ResNet baseline,
``shortcut='identity'``), trained 4 iterations with validation at 2 and 4 through tools/train.py
in a subprocess, so that the logs, checkpoints and dumped configs are the real ones.
"""
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np

from helpers import ROOT

CONFIG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py')
NUM_CLASSES = 4


def make_images(n: int, rng: np.random.Generator):
    """``n`` uint8 images (N, 3, 32, 32) of NUM_CLASSES learnable classes and their labels."""
    labels = rng.integers(0, NUM_CLASSES, n)
    imgs = rng.integers(0, 80, (n, 3, 32, 32)).astype(np.uint8)
    for i, y in enumerate(labels):
        if y < 3:
            imgs[i, y] += 150  # one dominant colour channel
        else:
            imgs[i, :, ::4] += 150  # horizontal stripes: unchanged by flips, shifted by crops
    return imgs, labels


def make_tiny_cifar100(root: str, n_train: int = 192, n_test: int = 64, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    base = osp.join(root, 'cifar-100-python')
    os.makedirs(base, exist_ok=True)
    for name, n in (('train', n_train), ('test', n_test)):
        imgs, labels = make_images(n, rng)
        entry = {'data': imgs.reshape(n, -1), 'fine_labels': labels.tolist(),
                 'coarse_labels': [0] * n, 'filenames': [f'{name}_{i}.png' for i in range(n)],
                 'batch_label': name}
        with open(osp.join(base, name), 'wb') as f:
            pickle.dump(entry, f, protocol=2)


PATCH_MODULE = '''"""Accept generated CIFAR-100 files (mmpretrain checks the official md5)."""
from mmpretrain.datasets import CIFAR100

CIFAR100.train_list = [['train', None]]
CIFAR100.test_list = [['test', None]]
'''

_CACHE = {}

TINY_CONFIG = '''_base_ = ['{base}']
custom_imports = dict(imports=['mmdsnet', 'tiny_cifar_md5'], allow_failed_imports=False)
model = dict(
    backbone=dict(depth=26, base_channels=8, shortcut='{shortcut}'),
    head=dict(in_channels=256, cal_acc=True))  # cal_acc: training accuracy in the log
data_root = '{data}'
train_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=2)
param_scheduler = dict(milestones=[2])
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
randomness = dict(seed=0)
'''


def tool_env(tmp) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp)]),
                CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='2')


def run_tool(tmp, tool, *args, check=True):
    """Run ``tools/<tool>`` in a subprocess from ``tmp``; returns (returncode, output)."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', tool), *map(str, args)]
    proc = subprocess.run(cmd, cwd=tmp, env=tool_env(tmp), capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{out[-4000:]}'
    return proc.returncode, out


def tiny_setup(tmp_path_factory) -> dict:
    """Data, the md5 helper and the two tiny configs (no training)."""
    if 'setup' not in _CACHE:
        tmp = tmp_path_factory.mktemp('tiny_runs')
        data = tmp / 'data'
        make_tiny_cifar100(str(data))
        (tmp / 'tiny_cifar_md5.py').write_text(PATCH_MODULE)
        configs = {}
        for name, shortcut in (('tiny_dsnet26_cifar100', 'dense'),
                               ('tiny_resnet26_cifar100', 'identity')):
            configs[name] = tmp / f'{name}.py'
            configs[name].write_text(TINY_CONFIG.format(base=CONFIG, shortcut=shortcut,
                                                        data=data))
        _CACHE['setup'] = dict(tmp=tmp, data=data, configs=configs)
    return _CACHE['setup']


def tiny_run(tmp_path_factory, name: str = 'tiny_dsnet26_cifar100') -> dict:
    """Train ``name`` once per session; returns its work dir, config and last checkpoint."""
    setup = tiny_setup(tmp_path_factory)
    if name not in _CACHE:
        work_dir = setup['tmp'] / f'work_{name}'
        run_tool(setup['tmp'], 'train.py', setup['configs'][name], '--work-dir', work_dir)
        _CACHE[name] = dict(setup, work_dir=work_dir, config=setup['configs'][name],
                            checkpoint=work_dir / 'iter_4.pth')
    return _CACHE[name]


# ---------------------------------------------- a tiny DS2Net classifier on an image folder
# (the distributed, resume and checkpoint-refusal tests)
TINY_CLS_CFG = '''
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[127.5] * 3, std=[64.0] * 3, to_rgb=False),
    backbone=dict(type='DS2Net', depth=26, stem='cifar', base_channels=8,
                  frozen_stages={frozen}, with_cp={with_cp}),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='CustomDataset', data_root={data!r},
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5),
                           dict(type='PackInputs')]),
    sampler=dict(type='InfiniteSampler', shuffle=True))
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters})
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[{milestone}], gamma=0.1)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval={interval}, by_epoch=False, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='ReplicaCheckHook')]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
'''


def make_image_folder(root, per_class=16, size=32):
    """Two learnable classes (horizontal vs vertical stripes) as PNG folders for CustomDataset."""
    import cv2
    rng = np.random.default_rng(0)
    for c, name in enumerate(['horizontal', 'vertical']):
        os.makedirs(osp.join(root, name), exist_ok=True)
        for i in range(per_class):
            stripes = (np.arange(size) // 4 % 2 * 160 + 40)[:, None].repeat(size, 1)
            img = stripes if c == 0 else stripes.T
            img = np.clip(img[..., None] + rng.normal(0, 30, (size, size, 3)), 0, 255)
            cv2.imwrite(osp.join(root, name, f'{i}.png'), img.astype(np.uint8))
    return root


def write_cfg(tmp_path, name='cfg.py', frozen=1, with_cp=True, iters=8, interval=4):
    data = make_image_folder(str(tmp_path / 'data'))
    path = tmp_path / name
    path.write_text(TINY_CLS_CFG.format(data=data, frozen=frozen, with_cp=with_cp, iters=iters,
                                        interval=interval, milestone=iters // 2))
    return str(path)
