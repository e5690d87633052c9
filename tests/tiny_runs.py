"""Tiny classification runs shared by the tool tests (trained once per test session).

The data is test_cls_e2e.py's generated CIFAR-100-format set; the configs are the real
DSNet50 0.25x CIFAR-100 config shrunk to DSNet-26 at 1/8 width (and its ResNet baseline,
``shortcut='identity'``), trained 4 iterations with validation at 2 and 4 through tools/train.py
in a subprocess, so that the logs, checkpoints and dumped configs are the real ones.
"""
import os
import os.path as osp
import subprocess
import sys

from test_cls_e2e import CONFIG, PATCH_MODULE, make_tiny_cifar100

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
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
