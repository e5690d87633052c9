"""A CheckpointHook whose checkpoints survive a crash at any moment."""
import os
import os.path as osp
from collections import deque

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
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


class CheckpointMismatchError(RuntimeError):
    """``load_from`` / ``--resume`` named a checkpoint of another architecture."""


@MMENGINE_HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuses ``load_from`` / ``resume`` checkpoints that do not fit the model.

    MMEngine loads them with ``strict=False``: a checkpoint of another architecture only logs
    a list of missing keys and the run trains from (mostly) random weights. This hook sees the
    checkpoint before it is loaded (``after_load_checkpoint`` runs first), logs one line with how
    many tensors match, and raises when fewer than ``min_fraction`` of the model's tensors are
    found with the right shape.

    Args:
        min_fraction (float): Defaults to 0.9 (the same bar as ``Pretrained`` backbones).
    """

    priority = 'VERY_HIGH'

    def __init__(self, min_fraction: float = 0.9) -> None:
        self.min_fraction = min_fraction

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        from mmdsnet.models.pretrained import compare_state_dicts
        source = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if isinstance(model, BaseTTAModel):  # --tta: the checkpoint is the wrapped model's
            model = model.module
        cmp = compare_state_dicts(model.state_dict(), source, runner._load_from)
        name = runner._load_from or 'the checkpoint'
        line = f'{name}: {len(cmp.matched)}/{cmp.total} model tensors match'
        if len(cmp.matched) < self.min_fraction * cmp.total:
            raise CheckpointMismatchError(
                f'{line}, fewer than {self.min_fraction:.0%}: it was saved from another '
                f'architecture. {cmp.describe()}. Use a checkpoint of this config\'s model, or, '
                f'to start a backbone from a classifier, model.backbone.init_cfg='
                f'dict(type="Pretrained", checkpoint=..., prefix="backbone.").')
        runner.logger.info(line + (f' ({cmp.describe()})' if cmp.total != len(cmp.matched)
                                   else ''))
