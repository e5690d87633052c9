"""End to end through mmpretrain's real CIFAR pipeline, and a check that a tiny DSNet learns.

The data is generated: a few hundred 32x32 images of four classes that survive the random crop
and flip (three classes have one dominant colour channel, one has horizontal stripes), pickled in
exactly the layout mmpretrain's ``CIFAR100`` reads (``cifar-100-python/{train,test}``).
mmpretrain checks the md5 of the official files; a tiny helper module, imported through the
config's ``custom_imports``, sets those md5s to None. Everything else (dataset class, transforms,
data preprocessor, Runner, hooks, evaluator) is the real thing, driven through tools/train.py and
tools/test.py in subprocesses.
"""
import os
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
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


@pytest.fixture(scope='module')
def tiny_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cls_e2e')
    data = tmp / 'data'
    make_tiny_cifar100(str(data))
    (tmp / 'tiny_cifar_md5.py').write_text(PATCH_MODULE)
    # The real config, plus the md5 helper in custom_imports (imported by Config.fromfile).
    cfg = tmp / 'tiny_dsnet_cifar100.py'
    cfg.write_text(f"_base_ = ['{CONFIG}']\n"
                   "custom_imports = dict(imports=['mmdsnet', 'tiny_cifar_md5'],\n"
                   "                      allow_failed_imports=False)\n")
    opts = [f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
            for k in (f'dataset.data_root={data}', 'num_workers=0', 'persistent_workers=False')]
    opts += [
        'model.backbone.depth=26', 'model.backbone.base_channels=8', 'model.head.in_channels=256',
        'train_dataloader.batch_size=16', 'val_dataloader.batch_size=32',
        'test_dataloader.batch_size=32', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
        'param_scheduler.milestones=[2]', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'randomness.seed=0'
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp)]), CUDA_VISIBLE_DEVICES='',
               OMP_NUM_THREADS='2')
    return dict(tmp=tmp, cfg=str(cfg), opts=opts, env=env)


def run_tool(setup, tool, *args):
    cmd = [sys.executable, osp.join(ROOT, 'tools', tool), *args]
    proc = subprocess.run(cmd, cwd=setup['tmp'], env=setup['env'], capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{out[-4000:]}'
    return out


def train_iters_logged(out: str):
    """(iteration, lr) of every 'Iter(train) [i/N]  lr: x' log line."""
    return [(int(i), float(lr))
            for i, lr in re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\]\s+lr: (\S+)', out)]


@pytest.mark.slow
def test_train_test_resume_through_tools(tiny_setup):
    s = tiny_setup
    wd_a = s['tmp'] / 'run_a'
    out = run_tool(s, 'train.py', s['cfg'], '--work-dir', str(wd_a), '--cfg-options', *s['opts'])
    assert (wd_a / 'iter_2.pth').is_file() and (wd_a / 'iter_4.pth').is_file()
    # auto_scale_lr (on by default): lr 0.1 for a total batch of 128, scaled to 0.1 * 16 / 128
    assert train_iters_logged(out) == [(1, 0.0125), (2, 0.0125), (3, 0.00125), (4, 0.00125)]
    assert 'effective lr 0.0125' in out
    assert re.search(r'accuracy/top1: [\d.]+', out)  # validation after training
    assert 'total batch size 16 (1 process(es) x 16)' in out

    # tools/test.py reports top-1 accuracy of the checkpoint as a table.
    out = run_tool(s, 'test.py', s['cfg'], str(wd_a / 'iter_4.pth'), '--work-dir',
                   str(s['tmp'] / 'test'), '--out', str(s['tmp'] / 'preds.pkl'),
                   '--cfg-options', *s['opts'])
    row = re.search(r'\|\s*accuracy/top1\s*\|\s*([\d.]+)\s*\|', out)
    assert row, out[-2000:]
    assert 0.0 <= float(row.group(1)) <= 100.0
    assert (s['tmp'] / 'preds.pkl').is_file()

    # An interrupted run: only iter_2.pth was written. --resume (no path) picks it up from
    # work_dir/last_checkpoint and continues at iteration 3 with the saved optimizer and
    # scheduler state, ending bit-identical to the uninterrupted run.
    wd_b = s['tmp'] / 'run_b'
    wd_b.mkdir()
    shutil.copy(wd_a / 'iter_2.pth', wd_b / 'iter_2.pth')
    (wd_b / 'last_checkpoint').write_text(str(wd_b / 'iter_2.pth'))
    out = run_tool(s, 'train.py', s['cfg'], '--work-dir', str(wd_b), '--resume',
                   '--cfg-options', *s['opts'])
    assert 'resumed epoch: 0, iter: 2' in out
    # nothing repeated, lr schedule kept
    assert train_iters_logged(out) == [(3, 0.00125), (4, 0.00125)]
    from mmdsnet.compat import patch_torch_load
    patch_torch_load()  # Runner checkpoints hold HistoryBuffers (see test_compat.py)
    a = torch.load(wd_a / 'iter_4.pth', weights_only=True)
    b = torch.load(wd_b / 'iter_4.pth', weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    assert b['message_hub']['runtime_info']['iter'] == 3  # last finished iteration (0-based)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(pa['momentum_buffer'], pb['momentum_buffer'])
    assert a['param_schedulers'] == b['param_schedulers']


def test_tiny_dsnet_learns():
    """The training loss of a tiny DSNet on a learnable task falls well below its start."""
    from mmdsnet.models import DSNet
    torch.manual_seed(0)
    imgs, labels = make_images(256, np.random.default_rng(1))
    x = (torch.from_numpy(imgs).float() - 100.0) / 60.0
    y = torch.from_numpy(labels).long()
    backbone = DSNet(depth=26, stem='cifar', base_channels=8)
    backbone.init_weights()
    head = nn.Linear(backbone.out_channels[-1], NUM_CLASSES)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    assert any('shortcuts' in n for n, _ in backbone.named_parameters())  # really dense
    losses = []
    for step in range(15):
        idx = torch.randint(0, len(x), (32, ))
        feat = backbone(x[idx])[-1].mean((2, 3))
        loss = nn.functional.cross_entropy(head(feat), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = np.mean(losses[:2]), np.mean(losses[-3:])
    assert end < 0.25 * start, f'loss {start:.3f} -> {end:.3f}: {np.round(losses, 3)}'
