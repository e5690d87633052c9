"""A CheckpointHook whose checkpoints survive a crash at any moment."""
import os
import os.path as osp
from collections import deque

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS as MMENGINE_HOOKS


def atomic_write_text(path: str, text: str) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@MMENGINE_HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's :class:`CheckpointHook` with crash-safe writes (local work dirs).

    MMEngine 0.10.7 deletes the oldest kept checkpoint *before* writing the new one, writes the
    checkpoint in place, and then rewrites ``last_checkpoint``: a kill during the write leaves a
    truncated ``iter_N.pth`` (and, with ``max_keep_ckpts=1``, no good checkpoint at all). Here the
    checkpoint is written to a temporary name in the same folder and renamed (atomic on POSIX),
    ``last_checkpoint`` is replaced the same way, and outdated checkpoints are removed only
    afterwards. So ``--resume`` always finds a complete checkpoint. Remote ``out_dir`` backends
    (no local rename) fall back to the parent's behaviour.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not osp.isdir(str(self.out_dir)):
            return super()._save_checkpoint_with_step(runner, step, meta)
        name = self.filename_tmpl.format(step)
        final, tmp_name = osp.join(self.out_dir, name), f'.{name}.tmp'
        outdated = []
        if self.max_keep_ckpts > 0:
            ids = [i for i in self.keep_ckpt_ids if i != step] + [step]
            outdated, ids = ids[:-self.max_keep_ckpts], ids[-self.max_keep_ckpts:]
            self.keep_ckpt_ids = deque(ids, self.max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids', ids)  # saved in the checkpoint
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        runner.save_checkpoint(
            self.out_dir, tmp_name, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        os.replace(osp.join(self.out_dir, tmp_name), final)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), final)
        for old in outdated:  # only now that a newer complete checkpoint exists
            old = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(old):
                os.remove(old)


@MMENGINE_HOOKS.register_module()
class ReplicaCheckHook(Hook):
    """After training, logs (and checks) that all processes hold identical parameters.

    DDP keeps replicas equal by averaging gradients; frozen stages, unused parameters or a
    non-synchronized buffer bug show up here as a non-zero difference.

    Args:
        tolerance (float): Largest acceptable absolute difference. Defaults to 0.
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance

    def after_train(self, runner) -> None:
        if not torch_dist.is_available() or not torch_dist.is_initialized():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        ref = flat.clone()
        torch_dist.broadcast(ref, 0)
        diff = (flat - ref).abs().max()
        torch_dist.all_reduce(diff, op=torch_dist.ReduceOp.MAX)
        world = torch_dist.get_world_size()
        msg = (f'replica check: max |parameter difference| across {world} processes = '
               f'{diff.item():.3g} ({flat.numel()} parameters)')
        runner.logger.info(msg)
        if diff.item() > self.tolerance:
            raise RuntimeError(f'{msg} exceeds tolerance {self.tolerance}: the replicas diverged')
