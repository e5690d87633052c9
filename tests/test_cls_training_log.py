"""What a classification training run logs and how its data stream runs (issue 11, dead ends 7, 8).

- The training log carries the training accuracy (``LinearClsHead(cal_acc=True)``): the paper's
  Fig. 4 plots training error next to validation error.
- The CIFAR schedules count iterations, so their training loader is an ``InfiniteSampler``:
  mmengine never restarts it (with ``DefaultSampler`` it warns "Reach the end of the dataloader"
  and sleeps 2 s at every epoch boundary), and an interrupted run resumed past an epoch boundary
  still ends bit-identical to the uninterrupted one.
"""
import glob
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config

pytest.importorskip('mmpretrain')

from test_cls_e2e import (PATCH_MODULE, ROOT, make_tiny_cifar100, run_tool,  # noqa: E402
                          train_iters_logged)

CONFIG_DIR = osp.join(ROOT, 'configs', 'mmpretrain')
CONFIGS = sorted(p for p in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(osp.sep))
CIFAR = [p for p in CONFIGS if '_cifar' in osp.basename(p)]
CONFIG = osp.join(CONFIG_DIR, 'dsnet', 'dsnet50-w0.25_1xb128_cifar100.py')
WARNING = 'Reach the end of the dataloader'


def test_every_classification_config_logs_training_accuracy():
    assert CONFIGS
    for path in CONFIGS:
        head = Config.fromfile(path).model.head
        assert head.get('cal_acc') is True, osp.relpath(path, CONFIG_DIR)


def test_cifar_schedules_use_an_infinite_sampler():
    assert len(CIFAR) >= 40
    for path in CIFAR:
        cfg = Config.fromfile(path)
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.train_dataloader.sampler == dict(type='InfiniteSampler', shuffle=True), path
        assert cfg.val_dataloader.sampler.type == 'DefaultSampler'  # evaluation: one pass


@pytest.fixture(scope='module')
def short_epochs(tmp_path_factory):
    """The real CIFAR-100 config on 48 generated images, batch 16: an epoch is 3 iterations."""
    tmp = tmp_path_factory.mktemp('cls_log')
    data = tmp / 'data'
    make_tiny_cifar100(str(data), n_train=48, n_test=16)
    (tmp / 'tiny_cifar_md5.py').write_text(PATCH_MODULE)
    cfg = tmp / 'tiny_dsnet_cifar100.py'
    cfg.write_text(f"_base_ = ['{CONFIG}']\n"
                   "custom_imports = dict(imports=['mmdsnet', 'tiny_cifar_md5'],\n"
                   "                      allow_failed_imports=False)\n")
    opts = [f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
            for k in (f'dataset.data_root={data}', 'num_workers=0', 'persistent_workers=False')]
    opts += [
        'model.backbone.depth=26', 'model.backbone.base_channels=8', 'model.head.in_channels=256',
        'train_dataloader.batch_size=16', 'val_dataloader.batch_size=16',
        'train_cfg.max_iters=8', 'train_cfg.val_interval=8', 'param_scheduler.milestones=[6]',
        'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=1',
        'randomness.seed=0'
    ]
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp)]), CUDA_VISIBLE_DEVICES='',
               OMP_NUM_THREADS='2')
    return dict(tmp=tmp, cfg=str(cfg), opts=opts, env=env)


@pytest.mark.slow
def test_log_has_training_accuracy_no_restart_warning_and_resume_is_exact(short_epochs):
    s = short_epochs
    wd_a = s['tmp'] / 'run_a'
    out = run_tool(s, 'train.py', s['cfg'], '--work-dir', str(wd_a), '--cfg-options', *s['opts'])
    # 8 iterations over a 3-iteration epoch: the stream never ended, nothing was restarted.
    assert [i for i, _ in train_iters_logged(out)] == list(range(1, 9))
    assert WARNING not in out
    # Every training log line carries the batch's top-1 accuracy (percent), beside the loss.
    lines = re.findall(r'Iter\(train\) \[\s*\d+/8\].*', out)
    assert len(lines) == 8
    for line in lines:
        acc = re.search(r'accuracy_top-1: ([\d.]+)', line)
        assert acc and 0.0 <= float(acc.group(1)) <= 100.0, line
        assert re.search(r'\bloss: [\d.]+', line), line
    # ... and so does the json scalar log that plotting tools read.
    scalars = glob.glob(str(wd_a / '*' / 'vis_data' / 'scalars.json'))
    assert scalars and 'accuracy_top-1' in open(scalars[0]).read()

    # Interrupted after iteration 4 (past the first epoch boundary), resumed: the same 8
    # iterations, bit-identical weights and momentum.
    wd_b = s['tmp'] / 'run_b'
    wd_b.mkdir()
    shutil.copy(wd_a / 'iter_4.pth', wd_b / 'iter_4.pth')
    (wd_b / 'last_checkpoint').write_text(str(wd_b / 'iter_4.pth'))
    out = run_tool(s, 'train.py', s['cfg'], '--work-dir', str(wd_b), '--resume',
                   '--cfg-options', *s['opts'])
    assert 'resumed epoch: 0, iter: 4' in out
    assert [i for i, _ in train_iters_logged(out)] == [5, 6, 7, 8]
    assert WARNING not in out
    from mmdsnet.compat import patch_torch_load
    patch_torch_load()
    a = torch.load(wd_a / 'iter_8.pth', weights_only=True)
    b = torch.load(wd_b / 'iter_8.pth', weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(pa['momentum_buffer'], pb['momentum_buffer'])
