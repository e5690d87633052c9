"""tools/analysis/benchmark.py's settings for the GPU script (tools/analysis/gpu_bench.sh): --amp,
--channels-last, --compile, --input-size H W, --out-indices, --backbone-only, --stock and
NAME@aten, on a tiny DSNet given as a config file. No timing is checked."""
import argparse
import importlib.util
import json
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location(
        '_tool_benchmark', osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / 'tiny_dsnet.py'
    path.write_text("model = dict(backbone=dict(type='mmdsnet.DSNet', depth=26, base_channels=8,"
                    " stem='cifar'))\n")
    return str(path)


def _args(**kw):
    return argparse.Namespace(**dict(dict(batch_size=2, input_size=(24, 40), out_indices=None,
                                          backbone_only=False, channels_last=False, compile=None,
                                          amp=None), **kw))


def test_detection_regime_runner(bench, tiny_config):
    """--backbone-only --out-indices 0 1 2 3 --input-size 24 40 --channels-last --amp bf16:
    four feature maps, a channels_last input of that size, convolutions under autocast."""
    runner = bench.Runner(tiny_config, _args(out_indices=[0, 1, 2, 3], backbone_only=True,
                                             channels_last=True, amp='bf16'),
                          torch.device('cpu'))
    assert runner.x.shape == (2, 3, 24, 40)
    assert runner.x.is_contiguous(memory_format=torch.channels_last)
    dtypes = []
    conv = next(m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    runner.train_step()
    assert dtypes == [torch.bfloat16]
    with runner.autocast():
        outs = runner.model(runner.x)
    assert len(outs) == 4 and outs[0].shape[-2:] == (24, 40)
    assert runner.loss(outs).dim() == 0
    assert all(p.grad is not None for p in runner.model.parameters() if p.requires_grad)


def test_classifier_runner_defaults(bench, tiny_config):
    runner = bench.Runner(tiny_config, _args(), torch.device('cpu'))
    assert isinstance(runner.model, bench.Classifier)
    assert runner.model(runner.x).shape == (2, 1000)
    with runner.autocast():
        assert not torch.is_autocast_enabled('cpu')


def test_aten_suffix_disables_the_device_kernels(bench):
    """NAME@aten: within a step the operators' CUDA kernels (where registered) are disabled."""
    from mmdsnet.ops import dense_aggregate
    registered = torch._C._dispatch_has_kernel_for_dispatch_key('mmdsnet::dense_aggregate',
                                                                'CUDA')
    with bench.aten_operators():
        assert ('cuda' in dense_aggregate._disabled_kernel) == registered
    assert 'cuda' not in dense_aggregate._disabled_kernel
    with pytest.raises(SystemExit, match='only @aten'):
        bench.Runner('DSNet50@fast', _args(), torch.device('cpu'))


def test_main_writes_the_settings(bench, tiny_config, tmp_path):
    """One run through main(): torch.compile (aot_eager, no C++ toolchain), two specs of the same
    model (one @aten), the settings recorded."""
    out = tmp_path / 'bench.json'
    bench.main(['--models', tiny_config, tiny_config + '@aten', '--no-stock', '--batch-size', '2',
                '--input-size', '24', '40', '--iters', '1', '--repeats', '1', '--warmup', '1',
                '--skip', 'memory', 'infer', 'flops', '--compile', 'aot_eager',
                '--backbone-only', '--out-indices', '1', '3', '--out', str(out)])
    res = json.loads(out.read_text())
    assert res['settings']['input_size'] == [24, 40]
    assert res['settings']['compile'] == 'aot_eager'
    assert res['settings']['out_indices'] == [1, 3] and res['settings']['backbone_only']
    assert set(res['models']) == {tiny_config, tiny_config + '@aten'}
    assert all(m['train_time']['median'] > 0 for m in res['models'].values())


def test_input_size_takes_one_or_two_values(bench):
    with pytest.raises(SystemExit):
        bench.main(['--input-size', '1', '2', '3'])


def test_ab_step_times_both_set_ups(monkeypatch, capsys):
    """tools/analysis/ab_step.py: parses the two set-ups, times both, prints the ratio; B through
    the dispatcher (``--b-dispatch``) really calls the operator."""
    import importlib.util
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        '_ab_step', osp.join(root, 'tools', 'analysis', 'ab_step.py'))
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    assert ab.parse_kwargs('dict(depth=26, shortcut_init=1.0)') == dict(depth=26,
                                                                      shortcut_init=1.0)
    assert ab.parse_kwargs("{'depth': 26}") == dict(depth=26)
    with pytest.raises(SystemExit, match='expected dict'):
        ab.parse_kwargs('[1, 2]')
    import sys

    import mmdsnet.ops  # noqa: F401
    ops = sys.modules['mmdsnet.ops.dense_aggregate']  # (the package's name is the operator)
    eager = []
    real = ops._Aggregate.apply
    monkeypatch.setattr(ops._Aggregate, 'apply', lambda *a: eager.append(1) or real(*a))
    counts = []
    for flag in ([], ['--b-dispatch']):
        eager.clear()
        monkeypatch.setattr('sys.argv', ['ab_step.py', '--a', 'dict(depth=26, base_channels=4)',
                                         '--b', 'dict(depth=26, base_channels=4)', *flag,
                                         '--rounds', '2', '--batch-size', '1'])
        ab.main()
        out = capsys.readouterr().out
        assert 'median of per-round ratios B / A:' in out and out.count(' s\n') == 2, out
        counts.append(len(eager))
    # with --b-dispatch only A makes eager calls: half as many
    assert counts[0] > 0 and counts[1] * 2 == counts[0], counts
