"""Tiny classification runs shared by the tool tests (trained once per test session).

The data is generated: a few hundred 32x32 images of four classes that survive the random crop
and flip (three classes have one dominant colour channel, one has horizontal stripes), pickled in
exactly the layout mmpretrain's ``CIFAR100`` reads (``cifar-100-python/{train,test}``).
mmpretrain checks the md5 of the official files; a tiny helper module (``PATCH_MODULE``),
imported through the config's ``custom_imports``, sets those md5s to None. The configs are the real
DSNet50 0.25x CIFAR-100 config shrunk to DSNet-26 at 1/8 width (and its ResNet baseline,
``shortcut='identity'``), trained 4 iterations with validation at 2 and 4 through tools/train.py
in this process (:func:`call_tool`), so that the logs, checkpoints and dumped configs are the
real ones. One run serves the whole test session: pytest-xdist's workers share it through a file
lock.
"""
import contextlib
import io
import os
import os.path as osp
import pickle
import random
import runpy
import shutil
import subprocess
import sys
import traceback
import warnings

import numpy as np
import torch
from filelock import FileLock

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


def _manager_classes(cls=None):
    """MMEngine's global-instance classes (MMLogger, MessageHub, DefaultScope, Visualizer ...)."""
    from mmengine.utils import ManagerMixin
    cls = cls or ManagerMixin
    for sub in cls.__subclasses__():
        yield sub
        yield from _manager_classes(sub)


@contextlib.contextmanager
def _fresh_interpreter_state(cwd, path):
    """What a tool run sees and changes of the process, set as in a fresh interpreter started in
    ``cwd`` with ``path`` on PYTHONPATH, and put back afterwards: the working dir, sys.path and
    sys.argv, the environment, MMEngine's global instances (none at start: a run names them by
    the second, so a leftover one could be picked up), the checkpoint dirs trusted, thread
    counts, RNG states, the multiprocessing start method, the modules imported from ``path``
    (config helpers such as the CIFAR md5 patch, whose patch is undone too; not the repository's
    own)."""
    import cv2
    import torch.multiprocessing as mp

    from mmdsnet import compat
    path = [str(p) for p in path]
    helpers = [p for p in path if p not in (ROOT, osp.join(ROOT, 'tools'))
               and not p.startswith(osp.join(ROOT, 'tools') + os.sep)]
    patches_cifar = any(osp.isfile(osp.join(p, 'tiny_cifar_md5.py')) for p in path)
    if patches_cifar:
        from mmpretrain.datasets import CIFAR100
        cifar_lists = CIFAR100.train_list, CIFAR100.test_list
    environ, cwd_before = dict(os.environ), os.getcwd()
    sys_path, argv, modules = list(sys.path), list(sys.argv), set(sys.modules)
    trusted = list(compat._trusted_dirs)
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    start_method = mp.get_start_method(allow_none=True)
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    deterministic = torch.are_deterministic_algorithms_enabled()
    instances = {cls: dict(cls._instance_dict) for cls in _manager_classes()}
    for cls in instances:
        cls._instance_dict.clear()
    try:
        os.chdir(cwd)
        sys.path[:0] = path
        yield
    finally:
        for cls, before in instances.items():
            if cls.__name__ == 'MMLogger':  # the run's log files
                for logger in cls._instance_dict.values():
                    for handler in logger.handlers:
                        handler.close()
            cls._instance_dict.clear()
            cls._instance_dict.update(before)
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:], sys.argv[:] = sys_path, argv
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], '__file__', None) or ''
            if any(file.startswith(p + os.sep) for p in helpers):
                del sys.modules[name]
        compat._trusted_dirs[:] = trusted
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        mp.set_start_method(start_method, force=True)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        torch.use_deterministic_algorithms(deterministic)
        if patches_cifar:
            CIFAR100.train_list, CIFAR100.test_list = cifar_lists


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def call_tool(tool, *args, cwd=ROOT, path=(), threads=None):
    """``python tools/<tool> ARGS`` (or a script's absolute path) run in this process (the
    imports a fresh interpreter pays for, about 8 s of CPU, are already done): the script runs as
    ``__main__`` from ``cwd`` with ``path`` on PYTHONPATH; returns a CompletedProcess with the
    exit status, stdout and stderr the command would have had (an uncaught exception: its
    traceback on stderr, status 1). Warnings go to stderr as Python's default filters show them.
    ``threads``: torch's thread count for the run (OMP_NUM_THREADS of the command), else this
    process's."""
    from mmengine.logging import MMLogger
    script = osp.join(ROOT, 'tools', tool)
    argv = [script, *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with _fresh_interpreter_state(cwd, [osp.dirname(script), ROOT, *path]), \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
            warnings.catch_warnings():
        warnings.resetwarnings()  # Python's default filters (each inserted in front)
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning,
                         DeprecationWarning):
            warnings.filterwarnings('ignore', category=category)
        warnings.filterwarnings('default', category=DeprecationWarning, module='__main__')
        warnings.showwarning = _show_warning
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
        if threads is not None:
            os.environ['OMP_NUM_THREADS'] = str(threads)
            torch.set_num_threads(threads)
        sys.argv[:] = argv
        # the logger a fresh interpreter starts with (to this run's stdout)
        MMLogger.get_instance('mmengine', logger_name='mmengine')
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            raise
        except BaseException:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def run_tool(tmp, tool, *args, check=True):
    """Run ``tools/<tool>`` from ``tmp`` (``tmp`` on PYTHONPATH: the configs' helper modules);
    returns (exit status, stdout + stderr)."""
    proc = call_tool(tool, *args, cwd=tmp, path=[tmp])
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, f'{" ".join(proc.args)} failed:\n{out[-4000:]}'
    return proc.returncode, out


def _shared(tmp_path_factory, name: str, make):
    """``make(folder)`` done once per test session in ``folder`` (under the session's temp
    root, shared by pytest-xdist's workers: the first one makes it while the others wait)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        base = base.parent  # the session's folder; each worker's basetemp lies in it
    folder = base / 'tiny_runs' / name
    folder.parent.mkdir(exist_ok=True)
    with FileLock(str(folder) + '.lock'):
        done = folder.parent / f'{name}.done'
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a try that failed
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def tiny_setup(tmp_path_factory) -> dict:
    """Data, the md5 helper and the two tiny configs (no training)."""
    def make(tmp):
        make_tiny_cifar100(str(tmp / 'data'))
        (tmp / 'tiny_cifar_md5.py').write_text(PATCH_MODULE)
        for name, shortcut in (('tiny_dsnet26_cifar100', 'dense'),
                               ('tiny_resnet26_cifar100', 'identity')):
            (tmp / f'{name}.py').write_text(TINY_CONFIG.format(base=CONFIG, shortcut=shortcut,
                                                               data=tmp / 'data'))
    tmp = _shared(tmp_path_factory, 'setup', make)
    configs = {name: tmp / f'{name}.py'
               for name in ('tiny_dsnet26_cifar100', 'tiny_resnet26_cifar100')}
    return dict(tmp=tmp, data=tmp / 'data', configs=configs)


def tiny_run(tmp_path_factory, name: str = 'tiny_dsnet26_cifar100') -> dict:
    """``name`` trained once per session; returns its work dir, config and last checkpoint.
    Tests read the run and write elsewhere."""
    setup = tiny_setup(tmp_path_factory)
    work_dir = _shared(tmp_path_factory, f'work_{name}', lambda work_dir: run_tool(
        setup['tmp'], 'train.py', setup['configs'][name], '--work-dir', work_dir))
    return dict(setup, work_dir=work_dir, config=setup['configs'][name],
                checkpoint=work_dir / 'iter_4.pth')


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
