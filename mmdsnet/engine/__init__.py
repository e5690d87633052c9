"""Runtime glue between mmdsnet's tools and MMEngine's Runner."""
import logging

from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from .cfg_checks import ConfigError, check_cfg
from .dist import revert_sync_bn_cfg, setup_cpu_distributed
from .hooks import (AtomicCheckpointHook, CheckpointMatchHook, CheckpointMismatchError,
                    ReplicaCheckHook, atomic_write_text)


def user_errors() -> tuple:
    """Exceptions whose message already names the problem and the fix: the tools print them as
    one ``error:`` line instead of a traceback through MMEngine."""
    from mmdsnet.compat import CheckpointLoadError
    from mmdsnet.datasets.checks import DatasetCheckError
    from mmdsnet.models.pretrained import PretrainedMismatchError
    return (ConfigError, CheckpointMismatchError, CheckpointLoadError, PretrainedMismatchError,
            DatasetCheckError, FileNotFoundError)


def use_atomic_checkpoints(cfg):
    """Swap the config's CheckpointHook for :class:`AtomicCheckpointHook` (same arguments)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook',
                                                 CheckpointHook):
        # by name (registered in mmengine's root HOOKS): configs must stay dumpable text
        hook['type'] = 'AtomicCheckpointHook'
    return cfg


def prepare_cfg(cfg, launcher: str = 'none'):
    """Everything a loaded config needs before ``Runner.from_cfg`` on this machine.

    * refuses configs that cannot build (wrong scope, scoped ``mmdet.DSNet``, a bad backbone
      argument, a head or neck that does not take the backbone's channels) with the fix;
    * CPU-only machines: makes ``--launcher pytorch|slurm|mpi`` work over gloo
      (:func:`setup_cpu_distributed`);
    * crash-safe checkpoints (:class:`AtomicCheckpointHook`);
    * ``load_from`` / ``--resume`` of another architecture's checkpoint stops with a message
      (:class:`CheckpointMatchHook`) instead of MMEngine's silent partial load.
    """
    for warning in check_cfg(cfg):
        print_log(warning, logger='current', level=logging.WARNING)
    cfg = setup_cpu_distributed(cfg, launcher)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'CheckpointMatchHook' for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='CheckpointMatchHook')]
    return use_atomic_checkpoints(cfg)


__all__ = [
    'prepare_cfg', 'check_cfg', 'ConfigError', 'setup_cpu_distributed', 'revert_sync_bn_cfg',
    'AtomicCheckpointHook', 'CheckpointMatchHook', 'CheckpointMismatchError', 'ReplicaCheckHook',
    'atomic_write_text', 'use_atomic_checkpoints', 'user_errors'
]
