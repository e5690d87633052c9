"""tools/analysis/benchmark.py: the stock ResNet50 baselines (every ratio divides by the best of
them; one that cannot be built is reported as missing while the run goes on), the settings
tools/analysis/gpu_bench.sh uses (--amp, --channels-last, --compile, --input-size H W,
--out-indices, --backbone-only, NAME:key=value, NAME@aten, NAME@dispatch, --ratio-to) and the
profiles (--profile, --python-profile), on a tiny DSNet given as a config file. No timing is
asserted (that is the benchmark's job)."""
import argparse
import json
import os.path as osp

import pytest
import torch

from helpers import load_tool


@pytest.fixture(scope='module')
def bench():
    return load_tool('analysis/benchmark.py')


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


# ------------------------------------------------------------------------- stock baselines
def test_the_best_stock_baseline_is_the_reference(bench):
    res = dict(models={
        'ResNet50-mmdet': dict(train_time=dict(median=2.0), memory=dict(m=710.0),
                               infer_img_s=10.0),
        'ResNet50-mmpretrain': dict(train_time=dict(median=1.9), memory=dict(m=700.0),
                                    infer_img_s=11.0),
        'ResNet50-torchvision': dict(missing='ImportError: no torchvision'),
        'ResNet50': dict(train_time=dict(median=1.5), memory=dict(m=600.0), infer_img_s=20.0),
    })
    # our identity mode is never the reference, however fast: it is what is being measured
    assert bench.references(res, 'm') == dict(time='ResNet50-mmpretrain',
                                              memory='ResNet50-mmpretrain',
                                              infer='ResNet50-mmpretrain')
    res['models']['ResNet50-mmdet']['memory']['m'] = 650.0
    assert bench.references(res, 'm')['memory'] == 'ResNet50-mmdet'


def test_a_baseline_that_cannot_be_built_is_reported_and_the_run_goes_on(bench, tmp_path,
                                                                            monkeypatch,
                                                                            capsys):
    def broken():
        raise ImportError('mmdet is not installed here')
    monkeypatch.setitem(bench.ZOO, 'ResNet50-mmdet', broken)
    out = tmp_path / 'b.json'
    bench.main(['--models', 'ResNet50', '--input-size', '32', '--batch-size', '2', '--iters', '1',
                '--repeats', '1', '--warmup', '0', '--threads', '1',
                '--skip', 'memory', 'infer', 'flops', '--out', str(out)])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res['models']['ResNet50-mmdet'] == dict(
        missing='ImportError: mmdet is not installed here')
    assert 'missing: ImportError: mmdet is not installed here' in printed
    measured = {k for k, m in res['models'].items() if 'train_time' in m}
    assert measured == {'ResNet50-mmpretrain', 'ResNet50-torchvision', 'ResNet50'}
    assert res['reference']['train_time'] in ('ResNet50-mmpretrain', 'ResNet50-torchvision')
    ratios = {k: m['train_time']['paired_ratio_median'] for k, m in res['models'].items()
              if 'train_time' in m}
    assert ratios[res['reference']['train_time']] == 1.0


# --------------------------------------------------------------------------------- settings
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


def test_aggregation_impl_is_the_models_own_argument(bench, tiny_config):
    """NAME:aggregation_impl='reference' builds the model with that argument: every dense
    aggregation computes by the reference form; without it, by the operators."""
    from mmdsnet.models.layers import DenseAggregation

    def impls(spec):
        model = bench.Runner(spec, _args(), torch.device('cpu')).model
        return {m.impl for m in model.modules() if isinstance(m, DenseAggregation)}
    assert impls(tiny_config + ":aggregation_impl='reference'") == {'reference'}
    assert impls(tiny_config) == {'op'}


def test_aten_suffix_disables_the_device_kernels(bench):
    """NAME@aten: within a step the operators run their ATen implementation on every device,
    the device kernels after it."""
    from types import SimpleNamespace

    from mmdsnet.ops import dense_aggregate, kernel_for
    from mmdsnet.ops.operators import dense_aggregate_aten
    cuda = SimpleNamespace(device=torch.device('cuda'))
    registered = torch._C._dispatch_has_kernel_for_dispatch_key('mmdsnet::dense_aggregate',
                                                                'CUDA')
    with bench.aten_operators():
        assert kernel_for(dense_aggregate, cuda) is dense_aggregate_aten
    assert (kernel_for(dense_aggregate, cuda) is not dense_aggregate_aten) == registered
    with pytest.raises(SystemExit, match='only @aten'):
        bench.Runner('DSNet50@fast', _args(), torch.device('cpu'))


@pytest.mark.slow  # benchmark runs (torch.compile included)
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


@pytest.mark.slow  # benchmark runs (torch.compile included)
def test_model_options_dispatch_and_ratio_to(bench, tiny_config, tmp_path):
    """NAME:key=value,...[@dispatch] and --ratio-to: an A/B of two set-ups in one process. The
    options reach the backbone, @dispatch calls the operators through the dispatcher, and the
    per-round ratios are taken to the --ratio-to model."""
    from mmdsnet.ops import operators as ops
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


# --------------------------------------------------------------------------------- profiles
def test_profiles(bench, tiny_config, tmp_path, capsys):
    """--profile: torch.profiler's table of one training step per model (printed, in the JSON,
    and a Chrome trace with --trace-dir); --python-profile STEPS: cProfile's table over that
    many steps. They run with every measurement skipped."""
    out, traces = tmp_path / 'p.json', tmp_path / 'traces'
    specs = [tiny_config, tiny_config + ":aggregation_impl='reference'"]
    bench.main(['--models', *specs, '--no-stock', '--batch-size', '2', '--input-size', '16',
                '--skip', 'train', 'memory', 'infer', 'flops', '--profile', '--python-profile',
                '2', '--profile-rows', '5', '--trace-dir', str(traces), '--out', str(out)])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    for s in specs:
        m = res['models'][s]
        assert 'train_time' not in m
        rows = [ln for ln in m['profile'].splitlines() if '::' in ln]  # one operator each
        assert 'Self CPU' in m['profile'] and 0 < len(rows) <= 5
        assert 'Ordered by: internal time' in m['python_profile']  # cProfile's tottime
        assert 'due to restriction <5>' in m['python_profile']
        assert f'== {s}: torch.profiler, one training step' in printed
        assert f'== {s}: cProfile, 2 training steps' in printed
        assert 'traceEvents' in json.loads(open(m['trace']).read())
        assert osp.dirname(m['trace']) == str(traces)
    assert len({res['models'][s]['trace'] for s in specs}) == 2
    with pytest.raises(SystemExit):
        bench.main(['--models', tiny_config, '--no-stock', '--trace-dir', str(traces)])
