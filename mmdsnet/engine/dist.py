"""torch.distributed on CPU-only machines through MMEngine's launchers.

mmengine 0.10.7 assumes CUDA twice: its ``pytorch``/``slurm`` launchers call
``torch.cuda.set_device`` before ``init_process_group`` (and default to nccl), and
``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP, which DDP rejects for CPU modules.
The Runner initializes the process group only when none exists yet, so on a CPU-only machine we
initialize it first (gloo, same env:// rendezvous the launchers use), ask for a DDP wrapper with
``device_ids=None``, and turn SyncBN into BN (SyncBN has no CPU kernels). With CUDA nothing
changes.
"""
import logging
import os
import subprocess
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log

from .cfg_checks import iter_typed

#: MMEngine's launchers (``--launcher``).
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _slurm_env() -> None:
    """Translate SLURM's variables into torch's env:// ones (what mmengine does for GPUs)."""
    node_list = os.environ['SLURM_NODELIST']
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')


def _mpi_env() -> None:
    os.environ.setdefault('RANK', os.environ['OMPI_COMM_WORLD_RANK'])
    os.environ.setdefault('WORLD_SIZE', os.environ['OMPI_COMM_WORLD_SIZE'])
    os.environ.setdefault('LOCAL_RANK', os.environ['OMPI_COMM_WORLD_LOCAL_RANK'])
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29500')


def revert_sync_bn_cfg(cfg) -> int:
    """Replace every ``type='SyncBN'`` in a config tree by ``'BN'``; return how many."""
    sync_bns = [node for _, node in iter_typed(cfg) if node['type'] in ('SyncBN', 'MMSyncBN')]
    for node in sync_bns:
        node['type'] = 'BN'
    return len(sync_bns)


def setup_cpu_distributed(cfg, launcher: str):
    """Make ``launcher`` work without CUDA; a no-op with CUDA or without a launcher."""
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if launcher == 'none' or torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = dist_cfg.get('backend', 'nccl')
    if backend != 'gloo':
        print_log(f'no CUDA device: torch.distributed backend {backend!r} -> "gloo" '
                  f'(nccl needs GPUs)', logger='current', level=logging.WARNING)
        dist_cfg['backend'] = 'gloo'
    if launcher == 'slurm':
        _slurm_env()
    elif launcher == 'mpi':
        _mpi_env()
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher {launcher}: environment variables {missing} are not set. Start the '
            f'job with tools/dist_train.sh (torchrun) or tools/slurm_train.sh, which set them.')
    if not torch_dist.is_initialized():
        timeout = dist_cfg.get('timeout')
        torch_dist.init_process_group(
            backend='gloo', init_method='env://', rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **({} if timeout is None else dict(timeout=timedelta(seconds=timeout))))
    n = revert_sync_bn_cfg(cfg.get('model', {}))
    if cfg.get('sync_bn') is not None:
        cfg.sync_bn = None
        n += 1
    if n:
        print_log(f'no CUDA device: {n} SyncBN setting(s) replaced by BN (SyncBN has no CPU '
                  f'kernels); each process normalizes over its own batch', logger='current',
                  level=logging.WARNING)
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel',
                                                   broadcast_buffers=False)
    # DDP on CPU modules takes no device ids; the Runner's default passes [LOCAL_RANK].
    wrapper['device_ids'] = None
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return cfg
