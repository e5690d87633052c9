"""Scale out, hold up: torchrun + gloo on the CPU, SIGKILL + --resume, crash-safe checkpoints."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_runs import call_tool, write_cfg

from helpers import ROOT

PY = sys.executable

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(args, **kw):
    """Run ``args``; ``.stdout`` is stdout and stderr interleaved, in the order written."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PORT=str(free_port()))  # dist_train.sh's rendezvous port; 29500 may be taken
    return subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


def load_state(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_identical_replicas(tmp_path):
    cfg = write_cfg(tmp_path, iters=4, interval=4)
    out = run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(tmp_path / 'wd')],
              timeout=300)
    log = out.stdout
    assert out.returncode == 0, log[-3000:]
    assert "backend 'nccl' -> \"gloo\"" in log  # the CPU path was taken, with a visible note
    assert 'replica check: max |parameter difference| across 2 processes = 0 ' in log
    assert osp.isfile(tmp_path / 'wd' / 'iter_4.pth')


def test_sync_bn_config_falls_back_to_bn_on_cpu(monkeypatch):
    from mmengine.config import Config

    from mmdsnet.engine import setup_cpu_distributed
    calls = []
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kw: calls.append(kw))
    for k, v in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                     MASTER_PORT='29999').items():
        monkeypatch.setenv(k, v)
    cfg = Config(dict(model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')),
                                 neck=[dict(norm_cfg=dict(type='SyncBN'))]),
                      env_cfg=dict(dist_cfg=dict(backend='nccl')), sync_bn='torch'))
    cfg = setup_cpu_distributed(cfg, 'pytorch')
    assert cfg.model.backbone.norm_cfg.type == 'BN' and cfg.model.neck[0].norm_cfg.type == 'BN'
    assert cfg.sync_bn is None and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert calls and calls[0]['backend'] == 'gloo' and calls[0]['world_size'] == 1
    monkeypatch.delenv('MASTER_PORT')
    with pytest.raises(RuntimeError, match=r"\['MASTER_PORT'\] are not set.*dist_train.sh"):
        setup_cpu_distributed(Config(dict(model=dict())), 'pytorch')


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_uninterrupted_weights(tmp_path):
    iters = 12
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=iters, interval=4)
    # The reference and the resumed run: tools/train.py in this process, one thread as the
    # killed one (only the killed run needs a process of its own).
    ref = call_tool('train.py', cfg, '--work-dir', str(tmp_path / 'ref'), threads=1)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]

    wd = tmp_path / 'killed'
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.Popen([PY, 'tools/train.py', cfg, '--work-dir', str(wd)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = wd / 'last_checkpoint'
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and last.read_text().strip():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # between checkpoints: no chance to clean up
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
    killed_at = last.read_text().strip()
    assert not osp.isfile(wd / f'iter_{iters}.pth'), 'killed too late to test anything'

    res = call_tool('train.py', cfg, '--work-dir', str(wd), '--resume', threads=1)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert 'resumed' in log.lower() and osp.basename(killed_at) in log
    a, b = load_state(tmp_path / 'ref' / f'iter_{iters}.pth'), load_state(wd / f'iter_{iters}.pth')
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # max_keep_ckpts=1: only the newest checkpoint remains, and no temporary file
    assert sorted(p for p in os.listdir(wd) if p.endswith(('.pth', '.tmp'))) == [
        f'iter_{iters}.pth']


def test_checkpoint_hook_never_leaves_a_truncated_latest(tmp_path, monkeypatch):
    """A crash while writing iter_8 leaves iter_4 complete and last_checkpoint pointing to it."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmdsnet.engine import prepare_cfg
    cfg = Config.fromfile(write_cfg(tmp_path, frozen=-1, with_cp=False, iters=8, interval=4))
    cfg.work_dir = str(tmp_path / 'wd')
    cfg = prepare_cfg(cfg)
    runner = Runner.from_cfg(cfg)
    original = Runner.save_checkpoint

    def crash_on_second(self, out_dir, filename, *a, **kw):
        if self.iter + 1 == 8:  # write half a file, then "die"
            with open(osp.join(out_dir, filename), 'wb') as f:
                f.write(b'PK\x03\x04 truncated')
            raise KeyboardInterrupt('simulated crash while saving')
        return original(self, out_dir, filename, *a, **kw)

    monkeypatch.setattr(Runner, 'save_checkpoint', crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    last = (tmp_path / 'wd' / 'last_checkpoint').read_text()
    assert last.endswith('iter_4.pth')
    torch.load(last, map_location='cpu', weights_only=False)  # complete and loadable
    assert not osp.exists(tmp_path / 'wd' / 'iter_8.pth')


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_a_detector(tmp_path):
    from mmdsnet.datasets.synthetic_det import make_synthetic_coco
    data = str(tmp_path / 'data') + '/'
    make_synthetic_coco(data, num_train=16, num_val=4, seed=0)
    cfg = tmp_path / 'det.py'
    cfg.write_text(f'''
_base_ = {osp.join(ROOT, 'configs/demo/faster-rcnn_ds2net-tiny_fpn_shapes.py')!r}
model = dict(backbone=dict(frozen_stages=1, with_cp=True))
train_dataloader = dict(batch_size=2, dataset=dict(data_root={data!r}))
val_dataloader = dict(dataset=dict(data_root={data!r}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={data + 'annotations/val.json'!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
custom_hooks = [dict(type='ReplicaCheckHook')]
''')
    out = run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', str(tmp_path / 'wd')],
              timeout=400)
    log = out.stdout
    assert out.returncode == 0, log[-3000:]
    assert 'replica check: max |parameter difference| across 2 processes = 0 ' in log
    assert 'Epoch(train) [1][4/4]' in log  # 16 images / (2 processes x 2)


def test_a_finished_run_releases_the_process_group(tmp_path, monkeypatch):
    """After the run, tools/train.py and test.py free the Runner (its DDP wrapper holds the process
    group) and destroy the group, so gloo's worker threads end while Python is alive; a gloo
    process that exits with them can abort in finalization. A failed run keeps the group."""
    import torch.distributed as dist

    from mmdsnet.engine import cli

    def gloo_threads():  # gloo names its native threads (gloo_tcp_loop, pt_gloo_runloop)
        names = []
        for task in os.listdir('/proc/self/task'):
            try:
                with open(f'/proc/self/task/{task}/comm') as f:
                    names.append(f.read().strip())
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
        return sum('gloo' in n for n in names)

    def init():
        store = dist.FileStore(str(tmp_path / f'store{len(list(tmp_path.iterdir()))}'), 1)
        dist.init_process_group('gloo', store=store, rank=0, world_size=1)

    class FakeRunner:  # the Runner's shape that matters: a DDP model in a reference cycle
        rank = 0

        def __init__(self):
            self.model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
            self.model.runner = self

    def job(runner):
        runner.model(torch.ones(1, 2)).sum().backward()  # gloo work through the reducer
        assert gloo_threads() > 0
        return 'done'

    def failing_job(runner):
        raise RuntimeError('inside the run')

    monkeypatch.setattr(cli, 'build_runner', lambda cfg, launcher, splits: (cfg, FakeRunner()))
    init()
    try:
        assert cli.run_job({}, 'pytorch', [], job) == ({}, 0, 'done')
        assert not dist.is_initialized()
        assert gloo_threads() == 0  # the group is gone, not only unregistered

        init()
        with pytest.raises(RuntimeError, match='inside the run'):
            cli.run_job({}, 'pytorch', [], failing_job)
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
