"""tools/analysis/paper_table.py on fabricated work dirs and a fabricated benchmark JSON."""
import json
import os
import os.path as osp
import re

import pytest

from helpers import ROOT, load_tool


def _load(name):
    return load_tool(f'analysis/{name}.py')


@pytest.fixture(scope='module')
def pt():
    return _load('paper_table')


def lines_to(path, records, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def row(table: str, first_cell: str):
    """The cells of the row whose first cell is ``first_cell``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f'no row {first_cell!r} in\n{table}')


def section(report: str, title: str) -> str:
    start = report.index(title)
    end = report.find('\n### ', start + 1)
    return report[start:end if end > 0 else None]


def test_parse_zoo_reads_every_table_row(pt):
    tables = pt.parse_zoo()
    by_number = {n: t for t in tables for n in t['tables']}
    assert sorted(by_number) == [1, 2, 3, 4, 5, 6, 7, 9]
    assert [len(by_number[n]['rows']) for n in (1, 2, 3, 4, 5, 6, 7)] == [10, 18, 15, 12, 9, 8, 11]
    t1 = by_number[1]['rows']
    assert t1[3] == dict(row='DSNet50 (GN + weight) (0.25x)', dataset='CIFAR-100',
                         config='dsnet50-w0.25_1xb128_cifar100',
                         config_path='configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py',
                         paper=(24.12, ))
    t7 = {r['config']: r for r in by_number[7]['rows']}
    assert t7['ds2net50_4xb32_in1k']['paper'] == (22.03, 5.93)
    assert t7['ds2net50_4xb32_in1k']['dataset'] == 'ImageNet-1k'
    # Table 6's 8x64d rows have no paper number of their own
    t6 = {r['config']: r for r in by_number[6]['rows']}
    assert t6['dsnext29-8x64d_1xb128_cifar100']['paper'] == (None, )
    for t in tables:  # every linked config exists
        for r in t['rows']:
            assert osp.isfile(osp.join(ROOT, r['config_path'])), r['config_path']


@pytest.fixture
def work_dirs(tmp_path):
    wd = tmp_path / 'work_dirs'
    # CIFAR run: validation while training (scalars.json), the last one counts
    run = wd / 'dsnet50-w0.25_1xb128_cifar100'
    (run.mkdir(parents=True))
    (run / 'dsnet50-w0.25_1xb128_cifar100.py').write_text('# dumped config\n')
    lines_to(run / '20261127_000000' / 'vis_data' / 'scalars.json', [
        {'lr': 0.1, 'loss': 4.0, 'iter': 100, 'step': 100},
        {'accuracy/top1': 60.0, 'accuracy/top5': 85.0, 'step': 32000},
        {'accuracy/top1': 75.5, 'accuracy/top5': 93.0, 'step': 64000}])
    # ImageNet run in a dir named otherwise: found through its copied config; tools/test.py's
    # metrics json is newer than the validation log and wins
    run = wd / 'my_in1k_try'
    run.mkdir()
    (run / 'ds2net50_4xb32_in1k.py').write_text('# dumped config\n')
    lines_to(run / '20261127_000000' / 'vis_data' / 'scalars.json',
             [{'accuracy/top1': 70.0, 'accuracy/top5': 90.0, 'step': 99}], mtime=1000)
    lines_to(run / '20261128_000000' / '20261128_000000.json',
             [{'accuracy/top1': 77.5, 'accuracy/top5': 93.75}], mtime=2000)
    # a run that has not validated yet: its row must read missing, not a number
    run = wd / 'resnet50-w0.25_1xb128_cifar100'
    lines_to(run / '20261127_000000' / 'vis_data' / 'scalars.json',
             [{'lr': 0.1, 'loss': 4.0, 'iter': 100, 'step': 100}])
    # Table 8: a detection run's CocoMetric validation
    run = wd / 'faster-rcnn_dsnet50_fpn_5e_coco2014'
    lines_to(run / '20261127_000000' / 'vis_data' / 'scalars.json', [
        {'lr': 0.02, 'loss': 1.0, 'epoch': 5, 'iter': 10, 'step': 10},
        {'coco/bbox_mAP': 0.335, 'coco/bbox_mAP_50': 0.545, 'coco/bbox_mAP_75': 0.36,
         'step': 5}])
    return wd


def test_tables_1_to_7_fill_ours_and_the_difference(pt, work_dirs):
    report = pt.build_report([str(work_dirs)])
    t1 = section(report, '### Table 1:')
    cells = row(t1, 'DSNet50 (GN + weight) (0.25x)')
    assert cells[2:6] == ['dsnet50-w0.25_1xb128_cifar100', '24.12', '24.50', '+0.38']
    assert cells[6] == 'dsnet50-w0.25_1xb128_cifar100/20261127_000000/vis_data/scalars.json ' \
                       '(step 64000)'
    # the same config in Table 3 gets the same number
    assert row(section(report, '### Table 3:'), 'DSNet50 (0.25x)')[4] == '24.50'
    # no validation yet, no run at all: 'missing', and no difference
    cells = row(t1, 'ResNet50 (0.25x)')
    assert cells[4:6] == ['missing', '-'] and 'no accuracy/top1 logged' in cells[6]
    assert row(t1, 'DSNet50 (IN + weight) (0.25x)')[4:7] == ['missing', '-', 'no run']
    # Table 7: top-1 / top-5 from tools/test.py's json (newest), run dir named otherwise
    cells = row(section(report, '### Table 7:'), 'DS2Net50')
    assert cells[3:6] == ['22.03 / 5.93', '22.50 / 6.25', '+0.47 / +0.32']
    assert cells[6].startswith('my_in1k_try/20261128_000000/20261128_000000.json')
    # Table 6's row without a paper number: ours missing, no difference
    assert row(section(report, '### Table 6:'), 'DSNeXt-29, 8x64d (see note)')[3:6] == \
        ['-', 'missing', '-']
    # every row of every table, and nothing else, got a number or 'missing'
    numbers = re.findall(r'\| (\d+\.\d\d|missing)', report)
    assert numbers.count('missing') > 60
    assert 'paper' in report.splitlines()[0].lower()


def test_table8_from_coco_table_reader(pt, work_dirs):
    t8 = section(pt.build_report([str(work_dirs)], tables=[8]), '### Table 8:')
    cells = row(t8, 'DSNet50')
    assert cells[1:5] == ['faster-rcnn_dsnet50_fpn_5e_coco2014', '54.2 / 36.0 / 33.7',
                          '54.5 / 36.0 / 33.5', '+0.3 / +0.0 / -0.2']
    assert row(t8, 'ResNet50')[3:6] == ['missing', '-', 'no run']
    assert '### Table 1' not in pt.build_report([str(work_dirs)], tables=[8])


def fake_benchmark(path, with_densenet=False):
    """benchmark.py --out's layout (the keys its own table() reads)."""
    models = {  # the best stock ResNet50 (mmdet's here) is every ratio's reference
        'ResNet50-mmdet': dict(params_m=25.56, gflops=4.1, train_time=dict(median=2.0, min=1.9,
                                                                             max=2.2),
                               memory=dict(peak_growth_mb=1000.0), infer_img_s=10.0),
        'ResNet50-torchvision': dict(missing='ModuleNotFoundError: No module named torchvision'),
        'ResNet50': dict(params_m=25.56, gflops=4.1, train_time=dict(median=2.1, min=2.0,
                                                                       max=2.2),
                         memory=dict(peak_growth_mb=1000.0), infer_img_s=9.9),
        'DSNet50': dict(params_m=25.58, gflops=4.2, train_time=dict(median=2.2, min=2.1,
                                                                      max=2.4),
                        memory=dict(peak_growth_mb=1030.0), infer_img_s=9.3),
    }
    res = dict(date='2026-11-27 09:00:00 UTC', command='benchmark.py', settings={},
               machine=dict(device='cpu', cpus=2), models=models,
               memory_measure='peak_growth_mb')
    path.write_text(json.dumps(res))
    return res


def test_table9_ratios_beside_the_papers(pt, tmp_path):
    res = fake_benchmark(tmp_path / 'bench.json')
    bench = _load('benchmark')
    text = bench.table(res, 'peak_growth_mb')  # benchmark.py reads it too
    assert 'DSNet50' in text and 'time ResNet50-mmdet' in text
    assert 'missing: ModuleNotFoundError' in text
    t9 = section(pt.build_report([], [str(tmp_path / 'bench.json')], tables=[9]), '### Table 9')
    cells = row(t9, 'DSNet50')
    # paper: 4777 / 3929 = 1.22 and 0.37 / 0.31 = 1.19; ours 1030 / 1000, 2.2 / 2.0
    assert cells[1:8] == ['DSNet50', '4777 (1.22)', '1030 (1.03)', '-0.19', '0.37 (1.19)',
                          '2.200 (1.10)', '-0.09']
    assert 'cpu' in cells[8] and 'ref: memory ResNet50-mmdet, time ResNet50-mmdet' in cells[8]
    assert row(t9, 'ResNet50')[3] == '1000 (1.00)' and row(t9, 'ResNet50')[6] == '2.100 (1.05)'
    assert row(t9, 'DS2Net50')[3] == 'missing'  # not in the JSON
    # no JSON at all: every row missing
    t9 = section(pt.build_report([], [], tables=[9]), '### Table 9')
    assert row(t9, 'DSNet50')[3] == 'missing' and row(t9, 'DSNet50')[8] == 'no benchmark JSON'


def test_cli_errors_are_one_line(pt, tmp_path, capsys):
    assert pt.main([str(tmp_path / 'nope')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no such work dir' in err[0]
    for d in ('a', 'b'):  # two work dirs of one config
        (tmp_path / 'wd' / d / '20261127_000000').mkdir(parents=True)
        (tmp_path / 'wd' / d / '20261127_000000' / '20261127_000000.log').write_text('')
        (tmp_path / 'wd' / d / 'dsnet50_4xb32_in1k.py').write_text('')
    assert pt.main([str(tmp_path / 'wd')]) == 1
    assert 'two work dirs for config dsnet50_4xb32_in1k' in capsys.readouterr().err
    (tmp_path / 'bad.json').write_text('{"x": 1}')
    assert pt.main(['--benchmark', str(tmp_path / 'bad.json'), '--tables', '9']) == 1
    assert 'not a benchmark.py --out JSON' in capsys.readouterr().err


def test_cli_writes_markdown(pt, work_dirs, tmp_path, capsys):
    out = tmp_path / 'tables.md'
    assert pt.main([str(work_dirs), '--tables', '1', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert '### Table 1:' in printed and '### Table 2' not in printed


def test_runs_below_a_folder_with_scripts_are_found_at_any_depth(pt, work_dirs, tmp_path,
                                                                   capsys):
    """The user's folder holds a script at its top and the runs one and three levels below; a
    folder of configs named like a run is not taken for one, and its row says why."""
    import shutil
    exp = tmp_path / 'experiments'
    (exp / 'round2' / 'cifar').mkdir(parents=True)
    (exp / 'launch_all.py').write_text('# the user\'s script\n')
    shutil.copytree(work_dirs / 'dsnet50-w0.25_1xb128_cifar100',
                    exp / 'dsnet50-w0.25_1xb128_cifar100')
    shutil.copytree(work_dirs / 'my_in1k_try', exp / 'round2' / 'cifar' / 'my_in1k_try')
    # configs only, no log: looks like the ResNet50 0.25x run but is not one
    (exp / 'resnet50-w0.25_1xb128_cifar100').mkdir()
    (exp / 'resnet50-w0.25_1xb128_cifar100' / 'resnet50-w0.25_1xb128_cifar100.py').write_text('')
    report = pt.build_report([str(exp)])
    t1 = section(report, '### Table 1:')
    assert row(t1, 'DSNet50 (GN + weight) (0.25x)')[4] == '24.50'
    assert row(section(report, '### Table 7:'), 'DS2Net50')[4] == '22.50 / 6.25'
    cells = row(t1, 'ResNet50 (0.25x)')
    assert cells[4] == 'missing'
    assert cells[6].startswith(f'{exp / "resnet50-w0.25_1xb128_cifar100"}: not a work dir: holds '
                               f'resnet50-w0.25_1xb128_cifar100.py but no <timestamp>/ folder')
    assert 'configs in no paper table' not in report  # the script's folder is no work dir
    # nothing to read at all: said at the end, and the tool exits 1
    empty = tmp_path / 'empty'
    (empty / 'configs').mkdir(parents=True)
    (empty / 'configs' / 'dsnet50_4xb32_in1k.py').write_text('')
    assert pt.main([str(empty), '--tables', '7']) == 1
    io = capsys.readouterr()
    assert f'No work dir found in {empty}' in io.out
    assert f'{empty / "configs"}: holds dsnet50_4xb32_in1k.py but no <timestamp>/' in io.out
    assert row(io.out, 'DSNet50')[6].startswith(f'{empty / "configs"}: not a work dir')
    assert 'error: no work dir found' in io.err
    # deeper than the limit: named, with the way out
    deep = tmp_path / 'deep' / 'a' / 'b' / 'c' / 'd'
    shutil.copytree(work_dirs / 'my_in1k_try', deep / 'my_in1k_try')
    runs = pt.index_work_dirs([str(tmp_path / 'deep')])
    assert not runs and runs.too_deep == [str(deep)]
    assert pt.index_work_dirs([str(tmp_path / 'deep' / 'a')]) == {
        'ds2net50_4xb32_in1k': str(deep / 'my_in1k_try')}
