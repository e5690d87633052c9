"""tools/analysis/plot_curves.py: the paper's Fig. 4 from MMEngine's scalar logs."""
import json
import os.path as osp

import numpy as np
import pytest
from tiny_runs import run_tool, tiny_run

from helpers import load_tool


@pytest.fixture(scope='module')
def pc():
    return load_tool('analysis/plot_curves.py')


def write_run(root, name, records, stamps=('20261127_000000', )):
    """A work dir with a copied config and one scalars.json per start (records per start)."""
    run = root / name
    run.mkdir()
    (run / f'{name}.py').write_text('# dumped config\n')
    if isinstance(records[0], dict):
        records = [records]
    for stamp, recs in zip(stamps, records):
        vis = run / stamp / 'vis_data'
        vis.mkdir(parents=True)
        (vis / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    return run


# The format of an epoch-based mmpretrain run with cal_acc=True (copied from a real log).
EPOCH_RUN = [
    {'lr': 0.0125, 'loss': 4.2, 'accuracy_top-1': 37.5, 'time': 1.6, 'epoch': 1, 'iter': 5,
     'step': 5},
    {'lr': 0.0125, 'loss': 3.3, 'accuracy_top-1': 56.25, 'time': 1.5, 'epoch': 1, 'iter': 10,
     'step': 10},
    {'accuracy/top1': 46.875, 'accuracy/top5': 100.0, 'time': 0.3, 'step': 1},
    {'lr': 0.00125, 'loss': 1.5, 'accuracy_top-1': 62.5, 'time': 0.7, 'epoch': 2, 'iter': 17,
     'step': 17},
    {'lr': 0.00125, 'loss': 1.1, 'accuracy_top-1': 81.25, 'time': 1.2, 'epoch': 2, 'iter': 22,
     'step': 22},
    {'accuracy/top1': 71.875, 'accuracy/top5': 100.0, 'time': 1.2, 'step': 2},
]


def test_epoch_run_errors_per_epoch(pc, tmp_path):
    run = pc.Run(str(write_run(tmp_path, 'dsnet50_4xb32_in1k', EPOCH_RUN)))
    assert run.by_epoch and run.label == 'dsnet50_4xb32_in1k'
    data = pc.collect([run], None, None, None)
    assert data['task'] == 'classification' and data['x'] == 'epoch'
    train, val = data['panels']
    assert train['ylabel'] == 'training top-1 error (%)'
    # the mean of each epoch's logged training errors: (62.5 + 43.75) / 2, (37.5 + 18.75) / 2
    assert train['lines'][0]['x'] == [1, 2]
    np.testing.assert_allclose(train['lines'][0]['y'], [53.125, 28.125])
    assert val['lines'][0]['x'] == [1, 2]
    np.testing.assert_allclose(val['lines'][0]['y'], [100 - 46.875, 100 - 71.875])
    # on iterations: validation at the last logged training iteration of its epoch
    data = pc.collect([run], None, None, 'iter')
    assert data['panels'][0]['lines'][0]['x'] == [5, 10, 17, 22]
    assert data['panels'][1]['lines'][0]['x'] == [10, 22]


def test_resumed_run_later_start_wins_and_loss_fallback(pc, tmp_path, capsys):
    first = [{'lr': 0.1, 'loss': 2.0, 'iter': 1, 'step': 1},
             {'lr': 0.1, 'loss': 1.9, 'iter': 2, 'step': 2},
             {'accuracy/top1': 10.0, 'step': 2},
             {'lr': 0.1, 'loss': 9.9, 'iter': 3, 'step': 3}]  # logged, then the run died
    second = [{'lr': 0.1, 'loss': 1.7, 'iter': 3, 'step': 3},
              {'lr': 0.1, 'loss': 1.6, 'iter': 4, 'step': 4},
              {'accuracy/top1': 30.0, 'step': 4}]
    run = pc.Run(str(write_run(tmp_path, 'r', [first, second],
                               ('20261127_000000', '20261127_010000'))))
    data = pc.collect([run], None, None, None)
    assert data['x'] == 'iter'
    train, val = data['panels']
    assert train['key'] == 'loss' and train['ylabel'] == 'training loss'
    assert 'cal_acc=True' in capsys.readouterr().err
    assert train['lines'][0]['x'] == [1, 2, 3, 4]
    assert train['lines'][0]['y'] == [2.0, 1.9, 1.7, 1.6]
    assert val['lines'][0]['y'] == [90.0, 70.0]
    with pytest.raises(ValueError, match='iteration-based'):
        pc.collect([run], None, None, 'epoch')


def test_detection_run_loss_and_map(pc, tmp_path):
    recs = [{'lr': 0.02, 'loss': 1.2, 'loss_rpn_cls': 0.3, 'epoch': 1, 'iter': 8, 'step': 8},
            {'coco/bbox_mAP': 0.123, 'coco/bbox_mAP_50': 0.3, 'step': 1}]
    run = pc.Run(str(write_run(tmp_path, 'faster-rcnn_dsnet50_fpn_5e_coco2014', recs)))
    data = pc.collect([run], None, None, None)
    assert data['task'] == 'detection'
    assert [p['key'] for p in data['panels']] == ['loss', 'coco/bbox_mAP']
    np.testing.assert_allclose(data['panels'][1]['lines'][0]['y'], [12.3])
    # any logged scalar on request
    data = pc.collect([run], 'loss_rpn_cls', 'coco/bbox_mAP_50', None)
    assert data['panels'][0]['lines'][0]['y'] == [0.3]
    assert data['panels'][1]['ylabel'] == 'validation mAP@.5 (%)'
    with pytest.raises(ValueError, match="no 'nope' in its training log .*loss_rpn_cls"):
        pc.collect([run], 'nope', None, None)


def test_missing_scalars_is_one_line_naming_the_file(tmp_path):
    (tmp_path / 'not_a_run').mkdir()
    code, out = run_tool(tmp_path, 'analysis/plot_curves.py', 'not_a_run', check=False)
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: not_a_run: no scalars.json')
    assert osp.join('not_a_run', '<timestamp>', 'vis_data') + '/scalars.json' in lines[0]
    code, out = run_tool(tmp_path, 'analysis/plot_curves.py', 'nowhere', check=False)
    assert code == 1 and 'nowhere: no such run dir' in out


@pytest.mark.slow
def test_plots_two_real_cpu_runs(pc, tmp_path_factory):
    """Two tiny runs trained by tools/train.py: both lines, named by config, PNG and SVG."""
    dsnet = tiny_run(tmp_path_factory, 'tiny_dsnet26_cifar100')
    resnet = tiny_run(tmp_path_factory, 'tiny_resnet26_cifar100')
    runs = [pc.Run(str(r['work_dir'])) for r in (resnet, dsnet)]
    data = pc.collect(runs, None, None, None)
    assert data['x'] == 'iter'
    train, val = data['panels']
    assert [line['label'] for line in train['lines']] == ['tiny_resnet26_cifar100',
                                                          'tiny_dsnet26_cifar100']
    for line, run in zip(val['lines'], runs):
        assert line['x'] == [2, 4]  # val_interval=2, max_iters=4
        assert line['y'] == [100.0 - run.val[s]['accuracy/top1'] for s in (2, 4)]
        assert all(0.0 <= y <= 100.0 for y in line['y'])
    for line in train['lines']:
        assert line['x'] == [1, 2, 3, 4]  # logger interval 1, training error (cal_acc=True)

    out = tmp_path_factory.mktemp('plots') / 'fig4.png'
    _, log = run_tool(dsnet['tmp'], 'analysis/plot_curves.py', resnet['work_dir'],
                      dsnet['work_dir'], '--out', out, '--svg')
    assert f'wrote {out}' in log
    from PIL import Image
    with Image.open(out) as im:
        assert im.format == 'PNG' and im.size == (1000, 380)
    svg = out.with_suffix('.svg').read_text()
    assert 'tiny_resnet26_cifar100' in svg and 'tiny_dsnet26_cifar100' in svg
    assert 'validation top-1 error (%)' in svg and 'training top-1 error (%)' in svg
