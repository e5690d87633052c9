"""tools/test.py: --show / --show-dir / --interval / --tta with mmdet's and mmpretrain's meanings,
--out as pkl or json, the metrics tables, the data hint; through the tool (run in this process)
on tiny runs (slow)."""
import json
import os.path as osp
import pickle
import re

import pytest
import torch
from mmengine.config import Config
from tiny_runs import run_tool, tiny_run

from helpers import ROOT, load_tool

CLS_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50-w0.25_1xb128_cifar100.py')
IN1K_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py')
DET_CFG = osp.join(ROOT, 'configs/demo/faster-rcnn_ds2net-tiny_fpn_shapes.py')
COCO_CFG = osp.join(ROOT, 'configs/faster_rcnn_ds2net50_coco.py')


@pytest.fixture(scope='module')
def tool():
    return load_tool('test.py')


def setup(tool, *argv):
    return tool.setup_cfg(tool.parse_args(list(argv)))


def test_show_dir_switches_on_each_librarys_hook(tool, monkeypatch):
    cfg = setup(tool, CLS_CFG, 'ckpt.pth', '--show-dir', 'pics', '--interval', '3')
    hook = cfg.default_hooks.visualization
    assert hook.type == 'VisualizationHook'  # mmpretrain: enable / out_dir / interval
    assert (hook.enable, hook.out_dir, hook.interval, hook.show) == (True, 'pics', 3, False)
    cfg = setup(tool, DET_CFG, 'ckpt.pth', '--show-dir', 'pics')
    hook = cfg.default_hooks.visualization
    assert hook.type == 'DetVisualizationHook'  # mmdet: draw / test_out_dir
    assert (hook.draw, hook.test_out_dir) == (True, 'pics') and not hook.get('show', False)
    # without the flags nothing changes
    assert setup(tool, CLS_CFG, 'ckpt.pth').default_hooks.visualization.enable is False

    monkeypatch.setenv('DISPLAY', ':0')
    cfg = setup(tool, DET_CFG, 'c.pth', '--show', '--wait-time', '0.5')
    hook = cfg.default_hooks.visualization
    assert (hook.draw, hook.show, hook.wait_time) == (True, True, 0.5)
    monkeypatch.delenv('DISPLAY')
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    with pytest.raises(SystemExit, match=r'--show needs a display .* --show-dir'):
        setup(tool, CLS_CFG, 'ckpt.pth', '--show')


def test_show_dir_needs_a_visualization_hook(tool, tmp_path):
    cfg = tmp_path / 'no_vis.py'
    cfg.write_text(f"_base_ = ['{CLS_CFG}']\n"
                   "default_hooks = dict(visualization=None)\n")
    with pytest.raises(SystemExit, match="need a visualization hook.*VisualizationHook"):
        setup(tool, str(cfg), 'ckpt.pth', '--show-dir', 'x')


def test_tta_uses_each_librarys_default(tool, tmp_path):
    plain = Config.fromfile(IN1K_CFG)
    cfg = setup(tool, IN1K_CFG, 'ckpt.pth', '--tta')
    assert cfg.model.type == 'mmpretrain.AverageClsScoreTTA'
    assert cfg.model.module.backbone == plain.model.backbone  # the config's model, wrapped
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline[:-1] == plain.test_dataloader.dataset.pipeline[:-1]
    assert pipeline[-1] == dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='PackInputs')]])

    cfg = setup(tool, DET_CFG, 'ckpt.pth', '--tta')
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.tta_cfg == dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    assert cfg.model.module.backbone.type == 'mmdsnet.DS2Net'
    tta = cfg.test_dataloader.dataset.pipeline[-1]
    assert tta.type == 'TestTimeAug'
    assert 'flip_direction' in tta.transforms[1][0]['meta_keys']  # DetTTAModel merges by it

    # a config's own tta_model / tta_pipeline win
    assert 'tta_model' not in Config.fromfile(IN1K_CFG)
    own_cfg = tmp_path / 'own_tta.py'
    own_cfg.write_text(f"_base_ = ['{IN1K_CFG}']\n"
                       "tta_model = dict(type='mmpretrain.AverageClsScoreTTA',\n"
                       "                 data_preprocessor=None)\n"
                       "tta_pipeline = [dict(type='LoadImageFromFile'),\n"
                       "                dict(type='PackInputs')]\n")
    cfg = setup(tool, str(own_cfg), 'ckpt.pth', '--tta')
    assert cfg.test_dataloader.dataset.pipeline == [dict(type='LoadImageFromFile'),
                                                    dict(type='PackInputs')]
    assert 'data_preprocessor' in cfg.model and cfg.model.data_preprocessor is None


def test_tta_model_runs_on_a_batch(tool, tmp_path_factory):
    """The --tta config builds and averages flipped predictions (mmpretrain's TTA, our model)."""
    import numpy as np
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = setup(tool, CLS_CFG, 'ckpt.pth', '--tta', '--cfg-options',
                'model.backbone.depth=26', 'model.backbone.base_channels=8',
                'model.head.in_channels=256')
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model).eval()
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    data = pipeline(dict(img=img, gt_label=1))
    assert len(data['inputs']) == 2  # flipped and not
    with torch.no_grad():
        merged = model.test_step(pseudo_collate([data]))[0]
        inputs = torch.stack([d.float() for d in data['inputs']])
        scores = model.module.data_preprocessor(dict(inputs=inputs), False)['inputs']
        scores = model.module(scores, mode='tensor').softmax(-1)
    torch.testing.assert_close(merged.pred_score, scores.mean(0))


def test_out_formats_and_metrics_table(tool):
    cfg = setup(tool, CLS_CFG, 'c.pth', '--out', 'r.pkl')
    assert cfg.load_from == 'c.pth'
    assert cfg.test_evaluator[0]['type'] == 'Accuracy'  # the config's own, then the dump
    assert cfg.test_evaluator[-1] == dict(type='DumpResults', out_file_path='r.pkl')
    cfg = setup(tool, DET_CFG, 'c.pth', '--out', 'r.pickle')
    assert cfg.test_evaluator[-1] == dict(type='DumpDetResults', out_file_path='r.pickle')
    cfg = setup(tool, DET_CFG, 'c.pth', '--out', 'r.json')
    assert cfg.test_evaluator[-1] == dict(type='DumpJsonResults', out_file_path='r.json')
    with pytest.raises(SystemExit, match='.pkl, .pickle or .json'):
        setup(tool, CLS_CFG, 'c.pth', '--out', 'r.txt')
    table = tool.format_metrics({'accuracy/top1': 26.5625, 'coco/bbox_mAP': 0.337, 'note': 'x'})
    lines = table.splitlines()
    assert lines[1].split('|')[1].strip() == 'metric'
    assert any('accuracy/top1' in ln and '26.5625' in ln for ln in lines)
    assert any('coco/bbox_mAP' in ln and '0.3370' in ln for ln in lines)
    assert 'no metrics' in tool.format_metrics({})


def test_dump_json_results(tmp_path):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmpretrain.structures import DataSample

    from mmdsnet.evaluation.dump_results import DumpJsonResults
    cls = DataSample().set_gt_label(2).set_pred_label(2).set_pred_score(
        torch.tensor([0.1, 0.2, 0.7]))
    det = DetDataSample(metainfo=dict(img_path='a.png', img_shape=(8, 8)))
    det.pred_instances = InstanceData(bboxes=torch.tensor([[1., 2., 3., 4.]]),
                                      scores=torch.tensor([0.9]), labels=torch.tensor([1]))
    det.gt_instances = InstanceData(bboxes=torch.zeros(1, 4), labels=torch.tensor([0]))
    metric = DumpJsonResults(str(tmp_path / 'out.json'))
    metric.process({}, [cls.to_dict(), det.to_dict()])
    assert metric.compute_metrics(metric.results) == {}
    out = json.loads((tmp_path / 'out.json').read_text())
    assert out[0]['pred_label'] == [2] and out[0]['gt_label'] == [2]
    assert out[0]['pred_score'] == pytest.approx([0.1, 0.2, 0.7])
    assert out[1]['pred_instances'] == dict(bboxes=[[1., 2., 3., 4.]],
                                            scores=[pytest.approx(0.9)], labels=[1])
    assert 'gt_instances' not in out[1] and out[1]['img_path'] == 'a.png'
    with pytest.raises(ValueError, match='.json'):
        DumpJsonResults('out.pkl')


@pytest.mark.slow
def test_cls_show_dir_and_json_through_the_tool(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    tmp = tmp_path  # the run is shared: what this test writes goes here
    out = tmp / 'preds.json'
    _, log = run_tool(run['tmp'], 'test.py', run['config'], run['checkpoint'], '--work-dir',
                      tmp / 'test_cls', '--show-dir', tmp / 'cls_pics', '--out', out)
    preds = json.loads(out.read_text())
    assert len(preds) == 64  # the generated test split
    # the accuracy the tool printed is the one in the dumped predictions
    top1 = float(re.search(r'\|\s*accuracy/top1\s*\|\s*([\d.]+)\s*\|', log).group(1))
    correct = sum(p['pred_label'] == p['gt_label'] for p in preds)
    assert top1 == pytest.approx(100.0 * correct / 64, abs=1e-3)
    pics = sorted((tmp / 'cls_pics').glob('*.png'))
    assert len(pics) == 64  # --interval 1: every sample drawn


@pytest.mark.slow
def test_det_show_dir_and_json_through_the_tool(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmdsnet.datasets.synthetic_det import make_synthetic_coco
    data = make_synthetic_coco(str(tmp_path / 'data'), num_train=4, num_val=3)
    root = data['data_root'].rstrip('/') + '/'
    cfg = tmp_path / 'det.py'
    cfg.write_text(f"_base_ = ['{DET_CFG}']\n"
                   f"test_dataloader = dict(dataset=dict(data_root='{root}'))\n"
                   f"test_evaluator = dict(ann_file='{root}{data['val_ann']}')\n")
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(str(cfg)).model)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'random.pth')
    out = tmp_path / 'preds.json'
    run_tool(tmp_path, 'test.py', cfg, tmp_path / 'random.pth', '--work-dir', tmp_path / 'wd',
             '--show-dir', 'pics', '--out', out)
    preds = json.loads(out.read_text())
    assert len(preds) == 3
    for p in preds:
        assert set(p['pred_instances']) == {'bboxes', 'scores', 'labels'}
        assert len(p['pred_instances']['bboxes']) == len(p['pred_instances']['scores'])
        assert 'gt_instances' not in p
    # mmdet puts a relative --show-dir under WORK_DIR/<timestamp>/
    pics = list((tmp_path / 'wd').glob('*/pics/*.png'))
    assert sorted(p.name for p in pics) == sorted(osp.basename(p['img_path']) for p in preds)


@pytest.mark.slow
def test_tta_through_the_tool(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    tmp = tmp_path  # the run is shared: what this test writes goes here
    _, log = run_tool(run['tmp'], 'test.py', run['config'], run['checkpoint'], '--work-dir',
                      tmp / 'test_tta', '--tta', '--out', tmp / 'tta.pkl')
    with open(tmp / 'tta.pkl', 'rb') as f:
        assert len(pickle.load(f)) == 64


# ------------------------------------------------------------------ the metrics tables
COCO_METRICS = {'coco/bbox_mAP': 0.337, 'coco/bbox_mAP_50': 0.543, 'coco/bbox_mAP_75': 0.362,
                'coco/bbox_mAP_s': 0.1}


@pytest.mark.parametrize('ann_file', ['data/coco/annotations/instances_val2014.json',
                                      '/d/coco/annotations/instances_minival2014.json'])
def test_table8_view_for_coco_metrics(tool, ann_file):
    evaluator = dict(type='CocoMetric', ann_file=ann_file, metric='bbox')
    table = tool.format_table8(COCO_METRICS, 'work_dirs/x/epoch_5.pth', evaluator)
    lines = table.splitlines()
    assert 'mAP@.5' in lines[0] and 'mAP@.75' in lines[0] and 'mAP@[.5:.95]' in lines[0]
    assert any('DS2Net50 (paper, Table 8)' in ln and '54.3' in ln for ln in lines)
    assert any('epoch_5.pth' in ln and '54.3 ' in ln and '36.2' in ln and '33.7' in ln
               for ln in lines)
    assert tool.format_table8({'accuracy/top1': 91.0}, 'x.pth', evaluator) == ''


def test_paper_rows_only_beside_coco_2014(tool):
    """The demo's shapes (or any other set) get the run's own row, not the paper's beside it."""
    demo = [dict(type='CocoMetric', ann_file='work_dirs/demo/data/annotations/val.json')]
    table = tool.format_table8(COCO_METRICS, 'work_dirs/demo/epoch_12.pth', demo)
    assert 'paper' not in table.split('(')[0] and 'DS2Net50' not in table
    assert any('epoch_12.pth' in ln and '54.3' in ln for ln in table.splitlines())
    assert 'shown only beside COCO 2014 results' in table and 'annotations/val.json' in table


def test_missing_checkpoint(tool, tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([CLS_CFG, str(tmp_path / 'nope.pth')])


# ------------------------------------------------------------------ the data hint, --data-root
def test_data_hint_names_the_failed_loader_and_every_key(tool, tmp_path):
    """test.py with no test set: the hint is about test_dataloader (and its evaluator), with
    every key --data-root sets, not about train_dataloader."""
    missing = tmp_path / 'nowhere'
    with pytest.raises(SystemExit) as info:
        tool.main([COCO_CFG, __file__, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                        f'test_dataloader.dataset.data_root={missing}/'])
    msg = str(info.value)
    assert msg.startswith('error: Dataset check failed') and 'test_dataloader: ' in msg
    assert 'train_dataloader' not in msg
    assert msg.rstrip().endswith(
        '--data-root DIR, which sets test_dataloader.dataset.data_root, test_evaluator.ann_file '
        '(or set those keys in the config).')
