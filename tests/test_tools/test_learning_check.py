"""The learning check's small version: DSNet learns real images at all (a few seconds on a CPU).

The benchmark itself (tools/experiments/learning_check.py: DSNet50/DS2Net50-0.25x against their
identity twin, 3 seeds, minutes) is run by hand; its numbers are in docs/design.md."""
import json
import os.path as osp
import sys

import pytest
import torch

pytest.importorskip('skimage', reason='the real images of the learning check ship with '
                    'scikit-image (requirements/stack.txt)')
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                            'experiments'))
import learning_check as lc  # noqa: E402

TINY = {'model.backbone.depth': 26, 'model.backbone.base_channels': 8,
        'model.head.in_channels': 256}


def test_textures10_is_real_balanced_and_split_by_region():
    data = lc.textures10(train_per_class=20, val_per_class=10)
    assert data['x_train'].shape == (200, 1, 16, 16) and data['x_val'].shape == (100, 1, 16, 16)
    assert torch.bincount(data['y_train']).tolist() == [20] * 10
    assert 0 <= data['x_train'].min() and data['x_train'].max() <= 1
    # real photographs, not noise: neighbouring pixels are strongly correlated
    x = data['x_train'][:, 0]
    a, b = x[:, :, :-1].flatten(), x[:, :, 1:].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.5
    # deterministic
    assert torch.equal(lc.textures10(20, 10)['x_val'], data['x_val'])


@pytest.mark.slow
def test_dsnet_learns_real_images():
    torch.manual_seed(0)
    data = lc.textures10(train_per_class=60, val_per_class=20)
    # the DS model alone: the twin trains through the same loop, and the report's pairing with
    # it is checked on made-up runs below
    results = lc.run(['dsnet50'], seeds=[0], iters=160, cfg_options=TINY, data=data,
                     log=lambda s: None, warmup=10, twin=False)
    assert list(results) == ['dsnet50']
    run = results['dsnet50']['runs'][0]
    curve = [loss for _, loss in run['curve']]
    # the training loss falls (from ln 10 = 2.3) and held-out patches are recognized well above
    # chance (0.1); measured on the 2-core box, one thread: loss 2.10 -> 1.19, accuracy 0.405
    assert curve[-1] < 0.75 * curve[0], curve
    assert run['val_acc'] > 0.25, run['val_acc']
    assert 'dsnet50' in lc.report(results, 160)


def test_report_pairs_the_seeds():
    def runs(accs):
        return dict(runs=[dict(seed=s, val_acc=a, curve=[(10, 2.0), (20, 1.0)])
                          for s, a in enumerate(accs)])

    results = {lc.TWIN: runs([0.50, 0.40, 0.60]), 'dsnet50': runs([0.52, 0.43, 0.59])}
    for res in results.values():  # the summary fields lc.run adds
        accs = [r['val_acc'] for r in res['runs']]
        res.update(mean_acc=sum(accs) / 3, min_acc=min(accs), max_acc=max(accs),
                   mean_curve=[(10, 2.0), (20, 1.0)])
    text = lc.report(results, 20)
    # differences +0.02 +0.03 -0.01: mean +0.013, sd 0.0208, s.e. 0.012
    assert 'seed by seed +0.013 +- 0.012 s.e., ahead on 2 of 3 seeds' in text, text
    assert 'seed by seed' not in lc.report({k: dict(v, runs=v['runs'][:1])
                                             for k, v in results.items()}, 20)


def test_w_scale_scales_the_stages_dense_weights_only():
    cfg = lc.load_cfg('ds2net50', TINY)
    torch.manual_seed(0)
    model = lc.build_model(cfg, 10, False, w_scale=0.5)
    stage = model.backbone.layer3
    for l, shortcut in enumerate(stage.aggregation.shortcuts, start=1):
        assert torch.allclose(shortcut.weight, torch.full_like(shortcut.weight, 0.5 / l))
    blocks = [m for name, m in stage.named_children() if name.isdigit()]
    inner = [b.inner_aggregation for b in blocks if b.inner_aggregation is not None]
    assert inner and all(torch.all(a.shortcuts[0].weight == 1) for a in inner)
    twin = lc.build_model(cfg, 10, True, w_scale=0.5)  # no dense W to scale
    assert not hasattr(twin.backbone.layer3, 'aggregation')


def test_textures16_64_has_sixteen_classes_from_wider_windows():
    data = lc.make_task('textures-16/64', train_per_class=8, val_per_class=4)
    assert data['num_classes'] == 16
    assert data['x_train'].shape == (128, 1, 16, 16) and data['x_val'].shape == (64, 1, 16, 16)
    assert torch.bincount(data['y_val']).tolist() == [4] * 16
    # the first ten classes are textures-10's photographs, seen through 64x64 windows
    ten = lc.textures10(train_per_class=8, val_per_class=4)
    assert not torch.equal(ten['x_train'], data['x_train'][:80])
    with pytest.raises(SystemExit, match='unknown task'):
        lc.make_task('textures-3')


def test_model_specs_carry_backbone_arguments():
    assert lc.parse_model('dsnet50') == ('dsnet50', {})
    assert lc.parse_model("dsnet50:shortcut_act=None,shortcut_init='last'") == (
        'dsnet50', dict(shortcut_act=None, shortcut_init='last'))
    with pytest.raises(SystemExit, match='key=value'):
        lc.parse_model('dsnet50:None')
    cfg = lc.load_cfg('dsnet50:shortcut_act=None', TINY)
    assert cfg.model.backbone.shortcut_act is None and cfg.model.backbone.depth == 26
    twin = lc.build_model(cfg, 16, True)  # the twin drops every shortcut argument
    assert twin.backbone.shortcut == 'identity' and twin.head.fc.out_features == 16


def test_report_pairs_the_training_loss():
    def runs(losses):
        return dict(runs=[dict(seed=s, val_acc=0.5, curve=[(10, v), (20, v), (30, v), (40, v)])
                          for s, v in enumerate(losses)])

    results = {lc.TWIN: runs([1.0, 2.0]), 'dsnet50': runs([1.5, 2.1])}
    for res in results.values():
        res.update(mean_acc=0.5, min_acc=0.5, max_acc=0.5,
                   mean_curve=[(10 * k, 1.0) for k in range(1, 5)])
    # differences +0.5 and +0.1: mean +0.3, s.e. 0.2
    assert 'at 25% +0.300 +- 0.200; at 50% +0.300 +- 0.200' in lc.report(results, 40)


def test_combine_reports_runs_made_apart(tmp_path):
    def record(seed, task='textures-10'):
        curve = [[10, 2.0 - seed], [20, 1.0]]
        results = {lc.TWIN: dict(runs=[dict(seed=seed, val_acc=0.5, curve=curve)]),
                   'dsnet50': dict(runs=[dict(seed=seed, val_acc=0.5 + seed / 10, curve=curve)])}
        path = tmp_path / f'{seed}-{task[-2:]}.json'
        path.write_text(json.dumps(dict(command='x', task=task, iters=20, results=results)))
        return str(path)

    paths = [record(0), record(1)]
    lc.main(['--combine', *paths, '--work-dir', str(tmp_path / 'out')])
    merged = json.loads((tmp_path / 'out' / 'learning_check.json').read_text())
    assert [r['seed'] for r in merged['results']['dsnet50']['runs']] == [0, 1]
    assert merged['results']['dsnet50']['mean_acc'] == pytest.approx(0.55)
    assert (tmp_path / 'out' / 'learning_check.png').stat().st_size > 0
    with pytest.raises(SystemExit, match='differ in task'):
        lc.combine([paths[0], record(2, task='textures-16/64')])


def test_faces2_splits_each_class_apart():
    data = lc.make_task('faces-2')
    assert data['num_classes'] == 2
    assert data['x_train'].shape == (140, 1, 16, 16) and data['x_val'].shape == (60, 1, 16, 16)
    assert torch.bincount(data['y_val']).tolist() == [30, 30]
    # no image in both splits
    flat_train = {tuple(x.flatten().tolist()) for x in data['x_train']}
    assert not any(tuple(x.flatten().tolist()) in flat_train for x in data['x_val'])
    assert torch.equal(lc.make_task('faces-2')['x_val'], data['x_val'])
