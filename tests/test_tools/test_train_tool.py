"""tools/train.py, tools/extract_backbone.py, --data-root (train.py and test.py), one-line errors,
the docs links the code prints (no training)."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import ROOT, load_tool

CIFAR100_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py')
CIFAR10_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar10.py')
IN1K_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py')


def _tool(name):
    return load_tool(f'{name}.py')


@pytest.fixture(scope='module')
def train_tool():
    return _tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return _tool('test')


# ------------------------------------------------------------------------------ train.py CLI
@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_local_rank_spellings_set_env(train_tool, monkeypatch, flag):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = train_tool.parse_args([CIFAR100_CFG, flag, '3'])
    assert args.local_rank == 3 and os.environ['LOCAL_RANK'] == '3'


def test_resume_forms(train_tool):
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG, '--resume']))
    assert cfg.resume is True and cfg.load_from is None  # latest in work_dir
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG, '--resume', 'a/iter_8.pth']))
    assert cfg.resume is True and cfg.load_from == 'a/iter_8.pth'
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.resume is False


def test_work_dir_amp_and_cfg_options(train_tool):
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.work_dir == osp.join('./work_dirs', 'dsnet50-w0.25_1xb128_cifar100')
    cfg = train_tool.setup_cfg(train_tool.parse_args(
        [CIFAR100_CFG, '--work-dir', 'wd', '--amp', '--cfg-options', 'train_cfg.max_iters=10',
         'model.backbone.depth=26']))
    assert cfg.work_dir == 'wd'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.train_cfg.max_iters == 10 and cfg.model.backbone.depth == 26


def test_auto_scale_lr_flag_and_log_line(train_tool):
    # on by default: a run on fewer GPUs scales the lr and says so
    cfg = train_tool.setup_cfg(train_tool.parse_args([CIFAR100_CFG]))
    assert cfg.auto_scale_lr.enable is True
    line = train_tool.describe_batch_and_lr(cfg, world_size=1)
    assert 'total batch size 128 (1 process(es) x 128)' in line
    assert 'effective lr 0.1' in line and 'WARNING' not in line
    cfg.train_dataloader.batch_size = 32
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)
    assert 'total batch size 64' in line and 'effective lr 0.05' in line
    # switched off, a mismatch is a warning
    cfg.auto_scale_lr.enable = False
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)
    assert 'total batch size 64' in line and 'NOT scaled' in line and '0.05' in line

    cfg = train_tool.setup_cfg(train_tool.parse_args([IN1K_CFG, '--auto-scale-lr']))
    assert cfg.auto_scale_lr.enable is True
    line = train_tool.describe_batch_and_lr(cfg, world_size=2)  # 2 x 32 of 128
    assert 'total batch size 64' in line and 'effective lr 0.025' in line


def test_auto_scale_lr_without_base_batch_size(train_tool, tmp_path):
    cfg_file = tmp_path / 'no_scale.py'
    cfg_file.write_text(f"_base_ = ['{CIFAR100_CFG}']\nauto_scale_lr = dict(_delete_=True)\n")
    with pytest.raises(SystemExit, match='base_batch_size'):
        train_tool.setup_cfg(train_tool.parse_args([str(cfg_file), '--auto-scale-lr']))


def test_amp_on_cpu_is_refused_early(train_tool, tmp_path, monkeypatch):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    with pytest.raises(SystemExit, match='--amp needs a GPU'):
        train_tool.main([CIFAR100_CFG, '--amp', '--work-dir', str(tmp_path / 'wd')])


def test_train_stops_on_missing_dataset(train_tool, tmp_path, capsys):
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as info:
        train_tool.main([CIFAR100_CFG, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                         f'train_dataloader.dataset.data_root={missing}',
                         f'val_dataloader.dataset.data_root={missing}'])
    msg = str(info.value)
    assert 'Dataset check failed' in msg and str(missing) in msg
    assert 'cifar-100-python' in msg
    assert not (tmp_path / 'wd').exists()  # stopped before the Runner made its work_dir

# -------------------------------------------------------------------------- extract_backbone
def test_extract_backbone(tmp_path, capsys):
    from mmengine.logging import MessageHub
    tool = _tool('extract_backbone')
    hub = MessageHub('extract-test')
    hub.update_scalar('train/loss', 1.0)
    sd = {'backbone.conv1.weight': torch.randn(4, 3, 3, 3), 'backbone.bn1.weight': torch.ones(4),
          'backbone.layer1.shortcuts.0.weight': torch.ones(1, 4, 1, 1),
          'neck.dummy': torch.zeros(1), 'head.fc.weight': torch.randn(10, 4),
          'head.fc.bias': torch.zeros(10)}
    src = tmp_path / 'epoch_1.pth'
    torch.save(dict(meta=dict(epoch=1, seed=np.int64(0)), state_dict=sd,
                    message_hub=hub.state_dict()), src)
    dst = tmp_path / 'out' / 'backbone.pth'
    assert tool.main([str(src), str(dst)]) == 3
    out = capsys.readouterr().out
    assert 'kept 3 tensors' in out and 'dropped 3 (head: 2, neck: 1)' in out
    loaded = torch.load(dst, weights_only=True)  # plain tensors only
    assert sorted(loaded) == ['bn1.weight', 'conv1.weight', 'layer1.shortcuts.0.weight']
    assert torch.equal(loaded['conv1.weight'], sd['backbone.conv1.weight'])
    with pytest.raises(SystemExit, match='exists'):
        tool.main([str(src), str(dst)])
    with pytest.raises(SystemExit, match='no key'):
        tool.main([str(src), str(dst), '--force', '--prefix', 'encoder.'])


def test_extracted_backbone_loads_into_dsnet(tmp_path):
    from mmdsnet.models import DSNet
    tool = _tool('extract_backbone')
    net = DSNet(depth=26, stem='cifar', base_channels=8)
    sd = {f'backbone.{k}': v for k, v in net.state_dict().items()}
    sd['head.fc.weight'] = torch.zeros(3, 256)
    torch.save({'state_dict': sd}, tmp_path / 'cls.pth')
    tool.main([str(tmp_path / 'cls.pth'), str(tmp_path / 'bb.pth')])
    fresh = DSNet(depth=26, stem='cifar', base_channels=8)
    fresh.load_state_dict(torch.load(tmp_path / 'bb.pth', weights_only=True), strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


DET_CFG = osp.join(ROOT, 'configs/faster_rcnn_ds2net50_coco.py')


def test_data_root_option_moves_datasets_and_evaluators(train_tool, test_tool):
    for tool, extra in ((train_tool, []), (test_tool, ['ckpt.pth'])):
        cfg = tool.setup_cfg(tool.parse_args([DET_CFG, *extra, '--data-root', '/d/coco']))
        for split in ('train', 'val', 'test'):
            assert cfg[f'{split}_dataloader'].dataset.data_root == '/d/coco'
        assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2014.json'
        for ev in ('val_evaluator', 'test_evaluator'):
            assert cfg[ev].ann_file == '/d/coco/annotations/instances_val2014.json'
    # a --cfg-options key still wins over --data-root for the one path it names
    cfg = train_tool.setup_cfg(train_tool.parse_args(
        [CIFAR100_CFG, '--data-root', '/d/c100', '--cfg-options',
         'val_dataloader.dataset.data_root=/elsewhere']))
    assert cfg.train_dataloader.dataset.data_root == '/d/c100'
    assert cfg.val_dataloader.dataset.data_root == '/elsewhere'


# --------------------------------------------------------------------------------- tracebacks
def _run(args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow  # a tool run end to end
def test_extract_backbone_missing_file_is_one_line(tmp_path):
    from tiny_runs import call_tool  # the tool's run in this process
    out = call_tool('extract_backbone.py', tmp_path / 'nope.pth', tmp_path / 'o.pth')
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert out.stderr.strip() == f'error: checkpoint {tmp_path / "nope.pth"} can not be found'


@pytest.mark.slow  # a tool run end to end in a fresh interpreter
def test_env_module_runs_without_runpy_warning():
    out = _run(['-W', 'error::RuntimeWarning', '-m', 'mmdsnet.utils.env'])
    assert 'RuntimeWarning' not in out.stderr and 'Traceback' not in out.stderr, out.stderr
    assert out.returncode == 0 and 'OK: the stack fits together' in out.stdout
    assert 'MMEngine' in out.stdout and 'mmcv ops' in out.stdout  # MMEngine's keys, and ours


# ------------------------------------------------------------------------------- docs links
def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    import re
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_every_docs_link_the_code_prints_resolves():
    import glob
    import re
    links = set()
    for path in glob.glob(osp.join(ROOT, 'mmdsnet', '**', '*.py'), recursive=True) + \
            glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True):
        links |= set(re.findall(r'docs/[\w./-]+\.md(?:#[\w-]+)?', open(path).read()))
    assert 'docs/classification.md#1-data-preparation-nothing-is-downloaded' in links
    for link in sorted(links):
        file, _, anchor = link.partition('#')
        assert osp.isfile(osp.join(ROOT, file)), link
        if anchor:
            headings = [ln.lstrip('#') for ln in open(osp.join(ROOT, file))
                        if ln.startswith('#')]
            assert anchor in {_slug(h) for h in headings}, link
