"""tools/analysis/benchmark.py's baselines (issue 15): the stock ResNet50s are measured beside
ours, every ratio divides by the best of them, and one that cannot be built is reported as
missing while the run goes on. No timing is asserted (that is the benchmark's job)."""
import importlib.util
import json
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture()
def bench():
    spec = importlib.util.spec_from_file_location(
        '_bench', osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
