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
    """NAME@aten: within a step the operators run their ATen implementation on every device
    (``mmdsnet.ops.use_implementation(kernels='aten')``), the device kernels after it."""
    from types import SimpleNamespace

    from mmdsnet.ops import dense_aggregate, kernel_for
    from mmdsnet.ops.dense_aggregate import dense_aggregate_aten
    cuda = SimpleNamespace(device=torch.device('cuda'))
    registered = torch._C._dispatch_has_kernel_for_dispatch_key('mmdsnet::dense_aggregate',
                                                                'CUDA')
    with bench.aten_operators():
        assert kernel_for(dense_aggregate, cuda) is dense_aggregate_aten
    assert (kernel_for(dense_aggregate, cuda) is not dense_aggregate_aten) == registered
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


def test_model_options_dispatch_and_ratio_to(bench, tiny_config, tmp_path):
    """NAME:key=value,...[@dispatch] and --ratio-to: an A/B of two set-ups in one process. The
    options reach the backbone, @dispatch calls the operators through the dispatcher, and the
    per-round ratios are taken to the --ratio-to model."""
    import sys

    import mmdsnet.ops  # noqa: F401
    ops = sys.modules['mmdsnet.ops.dense_aggregate']  # (the package's name is the operator)
    assert bench.parse_spec('DSNet50:shortcut_init=1.0,aggregation_impl=\'reference\'@aten') == (
        'DSNet50', dict(shortcut_init=1.0, aggregation_impl='reference'), 'aten')
    assert bench.parse_spec('DSNet50') == ('DSNet50', {}, '')
    for bad in ('DSNet50:1.0', 'DSNet50:init=ones', 'DSNet50:a=1,,'):
        with pytest.raises(SystemExit, match='bad options'):
            bench.parse_spec(bad)
    # depth 29: three blocks per stage, so block 2 has two sources (W = 1/2 by default)
    ones = bench.Runner(tiny_config + ':depth=29,shortcut_init=1.0', _args(), torch.device('cpu'))
    default = bench.Runner(tiny_config + ':depth=29', _args(), torch.device('cpu'))
    w = {k: v for k, v in ones.model.state_dict().items() if k.endswith('shortcuts.1.weight')}
    assert w and all(bool((v == 1).all()) for v in w.values())
    assert not all(bool((v == 1).all()) for k, v in default.model.state_dict().items()
                   if k.endswith('shortcuts.1.weight'))
    dispatched = bench.Runner(tiny_config + ':depth=29@dispatch', _args(), torch.device('cpu'))
    eager = []
    real = ops._Aggregate.apply
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops._Aggregate, 'apply', lambda *a: eager.append(1) or real(*a))
        default.train_step()
        n = len(eager)
        dispatched.train_step()
        assert n > 0 and len(eager) == n, 'the @dispatch step made eager calls'
    out = tmp_path / 'ab.json'
    specs = [tiny_config, tiny_config + ':shortcut_init=1.0', tiny_config + '@dispatch']
    bench.main(['--models', *specs, '--no-stock', '--ratio-to', tiny_config,
                '--batch-size', '2', '--input-size', '24', '--iters', '1', '--repeats', '2',
                '--warmup', '1', '--skip', 'memory', 'infer', 'flops', '--out', str(out)])
    res = json.loads(out.read_text())
    assert res['reference']['train_time'] == tiny_config
    assert res['models'][tiny_config]['train_time']['paired_ratios'] == [1.0, 1.0]
    assert all(len(res['models'][s]['train_time']['paired_ratios']) == 2 for s in specs)
    with pytest.raises(SystemExit):
        bench.main(['--models', tiny_config, '--no-stock', '--ratio-to', 'DSNet50'])
