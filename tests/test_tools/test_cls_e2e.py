"""End to end through mmpretrain's real CIFAR pipeline, and a check that a tiny DSNet learns.

The data is tiny_runs.py's generated CIFAR-100-format set. Everything else (dataset class,
transforms, data preprocessor, Runner, hooks, evaluator) is the real thing, driven through
tools/train.py (run in this process: tiny_runs.call_tool). What the run must show:

- auto_scale_lr scales the configured lr to the run's total batch, and the schedule holds;
- the training log carries the training accuracy (``LinearClsHead(cal_acc=True)``: the paper's
  Fig. 4 plots training error next to validation error), in the text log and the json scalars;
- the CIFAR schedules count iterations over an ``InfiniteSampler``: mmengine never restarts it
  (with ``DefaultSampler`` it warns "Reach the end of the dataloader" and sleeps 2 s at every
  epoch boundary);
- an interrupted run resumed past an epoch boundary ends bit-identical to the uninterrupted one.

tools/test.py on such a run: tests/test_tools/test_test_tool.py.
"""
import glob
import re
import shutil

import numpy as np
import pytest
import torch
from tiny_runs import CONFIG, NUM_CLASSES, PATCH_MODULE, make_images, make_tiny_cifar100, run_tool
from torch import nn

WARNING = 'Reach the end of the dataloader'


@pytest.fixture(scope='module')
def short_epochs(tmp_path_factory):
    """The real CIFAR-100 config on 48 generated images, batch 16: an epoch is 3 iterations."""
    pytest.importorskip('mmpretrain')
    tmp = tmp_path_factory.mktemp('cls_e2e')
    data = tmp / 'data'
    make_tiny_cifar100(str(data), n_train=48, n_test=16)
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
        'train_dataloader.batch_size=16', 'val_dataloader.batch_size=16',
        'train_cfg.max_iters=8', 'train_cfg.val_interval=8', 'param_scheduler.milestones=[6]',
        'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=1',
        'randomness.seed=0'
    ]
    return dict(tmp=tmp, cfg=str(cfg), opts=opts)


def train_iters_logged(out: str):
    """(iteration, lr) of every 'Iter(train) [i/N]  lr: x' log line."""
    return [(int(i), float(lr))
            for i, lr in re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\]\s+lr: (\S+)', out)]


@pytest.mark.slow
def test_train_log_and_exact_resume_through_the_tool(short_epochs):
    s = short_epochs
    wd_a = s['tmp'] / 'run_a'
    _, out = run_tool(s['tmp'], 'train.py', s['cfg'], '--work-dir', wd_a,
                      '--cfg-options', *s['opts'])
    assert (wd_a / 'iter_4.pth').is_file() and (wd_a / 'iter_8.pth').is_file()
    # auto_scale_lr (on by default): lr 0.1 for a total batch of 128, scaled to 0.1 * 16 / 128;
    # 8 iterations over a 3-iteration epoch: the stream never ended, nothing was restarted.
    lrs = [(i, 0.0125 if i <= 6 else 0.00125) for i in range(1, 9)]
    assert train_iters_logged(out) == lrs
    assert 'effective lr 0.0125' in out
    assert 'total batch size 16 (1 process(es) x 16)' in out
    assert WARNING not in out
    assert re.search(r'accuracy/top1: [\d.]+', out)  # validation after training
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

    # Interrupted after iteration 4 (past the first epoch boundary): only iter_4.pth was
    # written. --resume (no path) picks it up from work_dir/last_checkpoint and continues at
    # iteration 5 with the saved optimizer and scheduler state.
    wd_b = s['tmp'] / 'run_b'
    wd_b.mkdir()
    shutil.copy(wd_a / 'iter_4.pth', wd_b / 'iter_4.pth')
    (wd_b / 'last_checkpoint').write_text(str(wd_b / 'iter_4.pth'))
    _, out = run_tool(s['tmp'], 'train.py', s['cfg'], '--work-dir', wd_b, '--resume',
                      '--cfg-options', *s['opts'])
    assert 'resumed epoch: 0, iter: 4' in out
    assert train_iters_logged(out) == lrs[4:]  # nothing repeated, lr schedule kept
    assert WARNING not in out
    from mmdsnet.compat import patch_torch_load
    patch_torch_load()  # Runner checkpoints hold HistoryBuffers (see test_compat.py)
    a = torch.load(wd_a / 'iter_8.pth', weights_only=True)
    b = torch.load(wd_b / 'iter_8.pth', weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert b['message_hub']['runtime_info']['iter'] == 7  # last finished iteration (0-based)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(pa['momentum_buffer'], pb['momentum_buffer'])
    assert a['param_schedulers'] == b['param_schedulers']


@pytest.mark.slow  # a short training run
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
