"""COCO 2014 layout checks, the minival derivation, the synthetic shapes data, the mAP table."""
import json
import os
import os.path as osp
import sys
from pathlib import Path

import pytest

from mmdsnet.datasets.coco_layout import (CocoLayoutError, check_coco_dataset, check_coco_split,
                                          check_images)
from mmdsnet.datasets.synthetic_det import make_synthetic_coco

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools' / 'data'))
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))
import coco_table  # noqa: E402
import prepare_coco2014  # noqa: E402


def _fake_coco(root, split='val2014', ids=range(1, 11), write_images=None, ann=None):
    """A COCO 2014-style split: json + image folder (empty files stand in for JPEGs)."""
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    os.makedirs(osp.join(root, split), exist_ok=True)
    names = {i: f'COCO_{split}_{i:012d}.jpg' for i in ids}
    coco = dict(images=[dict(id=i, file_name=n, width=64, height=48) for i, n in names.items()],
                annotations=[dict(id=k + 1, image_id=i, category_id=1, bbox=[1, 2, 10, 12],
                                  area=120, iscrowd=0) for k, i in enumerate(ids)],
                categories=[dict(id=1, name='person')])
    ann = ann or osp.join(root, 'annotations', f'instances_{split}.json')
    with open(ann, 'w') as f:
        json.dump(coco, f)
    for i, n in names.items():
        if write_images is None or i in write_images:
            open(osp.join(root, split, n), 'wb').close()
    return ann


# ----------------------------------------------------------------------------- COCO checks
def test_complete_split_passes(tmp_path):
    ann = _fake_coco(str(tmp_path))
    assert check_coco_split(ann, str(tmp_path / 'val2014')) == (10, 10)


def test_missing_annotation_file_is_named(tmp_path):
    _fake_coco(str(tmp_path))
    with pytest.raises(CocoLayoutError, match=r'annotation file missing: .*instances_train2014'
                                              r'\.json .*holds \[\'instances_val2014\.json\'\]'):
        check_coco_split(str(tmp_path / 'annotations' / 'instances_train2014.json'),
                         str(tmp_path / 'train2014'))


def test_missing_image_folder_is_named_with_count(tmp_path):
    ann = _fake_coco(str(tmp_path))
    os.rename(tmp_path / 'val2014', tmp_path / 'val2014_partial')
    with pytest.raises(CocoLayoutError, match=r'image folder missing: .*val2014; .* lists 10 '
                                              r'images in it'):
        check_coco_split(ann, str(tmp_path / 'val2014'))


def test_missing_images_are_counted(tmp_path):
    ann = _fake_coco(str(tmp_path), write_images={1, 2, 3})
    with pytest.raises(CocoLayoutError, match=r'lists 10 images, only 3 are in .*val2014 \(7 '
                                              r'missing, e\.g\. \[\'COCO_val2014_000000000004'):
        check_coco_split(ann, str(tmp_path / 'val2014'))


def test_wrong_count_for_the_split(tmp_path):
    ann = _fake_coco(str(tmp_path))
    with pytest.raises(CocoLayoutError, match=r'lists 10 images, but this split has 40504'):
        check_images([f'COCO_val2014_{i:012d}.jpg' for i in range(1, 11)],
                     str(tmp_path / 'val2014'), ann, expected=40504)


def test_registered_pre_run_check(tmp_path):
    """What tools/train.py's dataset check (mmdsnet.datasets.checks) reports for COCO."""
    from mmdsnet.registry import DATASET_CHECKS
    assert DATASET_CHECKS.get('Coco2014Dataset') is check_coco_dataset
    _fake_coco(str(tmp_path), write_images=set())
    cfg = dict(type='Coco2014Dataset', data_root=str(tmp_path) + '/',
               ann_file='annotations/instances_val2014.json', data_prefix=dict(img='val2014/'))
    problems = check_coco_dataset(cfg)
    assert len(problems) == 1 and 'lists 10 images, only 0 are in' in problems[0]
    cfg['ann_file'] = 'annotations/instances_train2014.json'
    assert 'annotation file missing' in check_coco_dataset(cfg)[0]


def test_coco2014_dataset_refuses_incomplete_folder(tmp_path):
    """The dataset class of the Table 8 configs fails before training, with both counts."""
    pytest.importorskip('mmcv.ops', reason='mmdet needs mmcv built with its ops')
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    _fake_coco(str(tmp_path), write_images={1, 2, 3, 4, 5})
    # the configs' spelling: the scoped name imports mmdsnet.datasets.coco (and mmdet) on use
    cfg = dict(type='mmdsnet.Coco2014Dataset', data_root=str(tmp_path) + '/',
               ann_file='annotations/instances_val2014.json', data_prefix=dict(img='val2014/'),
               test_mode=True, pipeline=[])
    with pytest.raises(CocoLayoutError, match=r'lists 10 images, only 5 are in'):
        DATASETS.build(cfg)
    _fake_coco(str(tmp_path))  # complete now
    assert len(DATASETS.build(cfg)) == 10


# ----------------------------------------------------------------------------- minival tool
def test_prepare_coco2014_derives_minival(tmp_path, capsys):
    root = str(tmp_path)
    _fake_coco(root, 'val2014', ids=range(1, 21))
    _fake_coco(root, 'train2014', ids=range(100, 105))
    # val2017 = a subset of val2014's ids, given as its json (2017 file names)
    v17 = dict(images=[dict(id=i, file_name=f'{i:012d}.jpg') for i in (2, 4, 6, 8, 99)],
               annotations=[], categories=[])
    with open(osp.join(root, 'annotations', 'instances_val2017.json'), 'w') as f:
        json.dump(v17, f)
    assert prepare_coco2014.main([root, '--make-minival']) == 0
    out = capsys.readouterr().out
    with open(osp.join(root, 'annotations', 'instances_minival2014.json')) as f:
        mini = json.load(f)
    with open(osp.join(root, 'annotations', 'instances_valminusminival2014.json')) as f:
        rest = json.load(f)
    assert sorted(im['id'] for im in mini['images']) == [2, 4, 6, 8]
    assert mini['images'][0]['file_name'].startswith('COCO_val2014_')  # 2014 names kept
    assert {a['image_id'] for a in mini['annotations']} == {2, 4, 6, 8}
    assert len(rest['images']) == 16 and mini['categories'] == rest['categories']
    assert '1 of the 5 val2017 ids are not in' in out
    assert 'official split has 5000' in out  # the count check speaks up on a toy folder


def test_prepare_coco2014_reports_missing(tmp_path, capsys):
    root = str(tmp_path)
    _fake_coco(root, 'val2014', write_images={1})
    assert prepare_coco2014.main([root]) == 1
    out = capsys.readouterr().out
    assert '[MISSING] train2014' in out and 'instances_train2014.json' in out
    assert 'lists 10 images, only 1 are in' in out


def test_val2017_ids_from_image_folder(tmp_path):
    os.makedirs(tmp_path / 'val2017')
    for i in (42, 7):
        open(tmp_path / 'val2017' / f'{i:012d}.jpg', 'wb').close()
    assert prepare_coco2014.val2017_ids(str(tmp_path)) == {7, 42}


# ----------------------------------------------------------------------------- synthetic data
def test_synthetic_coco_is_seeded_and_valid(tmp_path):
    a = make_synthetic_coco(str(tmp_path / 'a'), num_train=6, num_val=3, seed=3)
    b = make_synthetic_coco(str(tmp_path / 'b'), num_train=6, num_val=3, seed=3)
    for split in ('train', 'val'):
        ja = json.load(open(osp.join(a['data_root'], a[f'{split}_ann'])))
        jb = json.load(open(osp.join(b['data_root'], b[f'{split}_ann'])))
        assert ja == jb
        assert len(ja['images']) == (6 if split == 'train' else 3)
        assert [c['name'] for c in ja['categories']] == ['square', 'disc', 'triangle']
        for ann in ja['annotations']:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 4 and h >= 4
        names = [im['file_name'] for im in ja['images']]
        img_dir = osp.join(a['data_root'], a[f'{split}_img'])
        assert check_images(names, img_dir) == (len(names), ) * 2
        for n in names:
            assert (Path(a['data_root'], split, n).read_bytes()
                    == Path(b['data_root'], split, n).read_bytes())
    c = make_synthetic_coco(str(tmp_path / 'c'), num_train=6, num_val=3, seed=4)
    assert (json.load(open(osp.join(c['data_root'], c['train_ann'])))['annotations']
            != json.load(open(osp.join(a['data_root'], a['train_ann'])))['annotations'])


def test_shapes_are_drawn_where_the_boxes_are():
    import numpy as np

    from mmdsnet.datasets.synthetic_det import draw_shape
    img = np.zeros((20, 20, 3), np.uint8)
    draw_shape(img, 'disc', (2, 4, 12, 14), (255, 0, 0))
    ys, xs = np.nonzero(img[..., 0])
    assert xs.min() >= 2 and xs.max() <= 11 and ys.min() >= 4 and ys.max() <= 13
    assert img[9, 7, 0] == 255 and img[4, 2, 0] == 0  # centre filled, corner empty (a disc)


# ----------------------------------------------------------------------------- mAP table
def test_coco_table_reads_val_logs_and_test_outputs(tmp_path, capsys):
    run_a = tmp_path / 'run_a' / '20260101_000000' / 'vis_data'
    run_a.mkdir(parents=True)
    with open(run_a / '20260101_000000.json', 'w') as f:  # json lines, as LoggerHook writes
        f.write(json.dumps(dict(lr=0.02, loss=1.0, step=10)) + '\n')
        f.write(json.dumps({'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.2,
                            'coco/bbox_mAP_75': 0.05, 'step': 1}) + '\n')
        f.write(json.dumps({'coco/bbox_mAP': 0.337, 'coco/bbox_mAP_50': 0.543,
                            'coco/bbox_mAP_75': 0.362, 'step': 5}) + '\n')
    test_out = tmp_path / 'run_b.json'  # a single dict, as tools/test.py's log
    test_out.write_text(json.dumps({'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5,
                                    'coco/bbox_mAP_75': 0.31}))
    assert coco_table.main([str(tmp_path / 'run_a'), str(test_out),
                            '--names', 'mine DS2Net50', 'mine R50']) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split('|')[3:6] == [' mAP@.5 ', ' mAP@.75 ', ' mAP@[.5:.95] ']
    assert 'DS2Net50 (paper, Table 8)' in out and '54.3' in out  # the paper's row, labelled
    mine = [ln for ln in lines if 'mine DS2Net50' in ln][0]
    assert [c.strip() for c in mine.split('|')[3:6]] == ['54.3', '36.2', '33.7']  # last val
    assert coco_table.main([str(tmp_path / 'nothing_here')]) == 1


# ----------------------------------------------------------------- categories that are not COCO's
def _shapes_as_coco2014(root: Path, n=4):
    """The shapes data laid out as COCO 2014 (what a user pointing data_root at their own COCO
    format folder has): train2014/val2014 jsons whose categories are square, disc, triangle."""
    data = make_synthetic_coco(str(root / 'shapes'), num_train=n, num_val=n, seed=0)
    (root / 'annotations').mkdir(parents=True)
    for split, ours in (('train2014', 'train'), ('val2014', 'val')):
        os.rename(osp.join(data['data_root'], ours), root / split)
        os.rename(osp.join(data['data_root'], data[f'{ours}_ann']),
                  root / 'annotations' / f'instances_{split}.json')


def test_foreign_categories_stop_the_run_before_the_runner(tmp_path):
    """The Table 8 config on a folder of other categories: one line naming the mismatch."""
    pytest.importorskip('mmdet')
    from mmengine.config import Config

    from mmdsnet.datasets import DatasetCheckError, check_datasets, set_data_root
    _shapes_as_coco2014(tmp_path)
    cfg = Config.fromfile(str(ROOT / 'configs' / 'faster_rcnn_ds2net50_coco.py'))
    set_data_root(cfg, str(tmp_path))
    with pytest.raises(DatasetCheckError) as info:
        check_datasets(cfg, ['train', 'val'])
    problems = [ln for ln in str(info.value).splitlines() if ln.startswith('  - ')]
    assert len(problems) == 2  # the train json, the val json (read by loader and evaluator)
    assert problems[0].startswith(f'  - train_dataloader: none of the 3 categories of '
                                  f'{tmp_path}/annotations/instances_train2014.json')
    assert "(['square', 'disc', 'triangle']) is among the 80 classes the dataset trains " \
           "(['person', 'bicycle'" in problems[0]
    assert 'metainfo=dict(classes=(...))' in problems[0]
    # the same folder with its own classes passes
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.metainfo = dict(classes=('square', 'disc', 'triangle'))
    check_datasets(cfg, ['train', 'val'])


def test_categories_are_read_from_either_end_or_the_whole_file(tmp_path):
    from mmdsnet.datasets.coco_layout import read_categories
    cats = [dict(id=1, name='person'), dict(id=2, name='bicycle')]
    pad = [dict(id=i, file_name=f'{i:012d}.jpg', width=9, height=9) for i in range(3000)]
    for order in (('categories', 'images'), ('images', 'categories')):
        doc = {k: (cats if k == 'categories' else pad) for k in order}
        (tmp_path / 'a.json').write_text(json.dumps(doc))
        assert read_categories(str(tmp_path / 'a.json'), window=512) == cats
    doc = dict(images=pad[:1500], categories=cats, annotations=pad[1500:])  # in the middle
    (tmp_path / 'a.json').write_text(json.dumps(doc))
    assert read_categories(str(tmp_path / 'a.json'), window=512) == cats


def test_prepare_coco2014_refuses_foreign_categories(tmp_path, capsys):
    pytest.importorskip('mmdet')
    _shapes_as_coco2014(tmp_path)
    assert prepare_coco2014.main([str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert '[ WRONG ] train2014: ' in out.out
    assert 'none of its categories is one of COCO' in out.out
    assert 'ready' not in out.out


def test_dataset_of_which_no_annotation_can_train_stops(tmp_path):
    """Loaded anyway (no pre-run check): the dataset raises one line instead of warning
    'training goes on' and dying later in mmdet with a raw traceback."""
    pytest.importorskip('mmcv.ops', reason='mmdet needs mmcv built with its ops')
    from mmengine.registry import DATASETS, init_default_scope

    from mmdsnet.datasets.coco_layout import CocoAnnotationError
    init_default_scope('mmdet')
    _shapes_as_coco2014(tmp_path)
    cfg = dict(type='mmdsnet.Coco2014Dataset', data_root=str(tmp_path) + '/',
               ann_file='annotations/instances_val2014.json', data_prefix=dict(img='val2014/'),
               pipeline=[])
    with pytest.raises(CocoAnnotationError, match=r'instances_val2014.json: none of its \d+ '
                       r'annotations can train \(\d+ with unknown category id, skipped \(not '
                       r'among the dataset classes\)\)\. Its categories \[.disc., .square., '
                       r'.triangle.\] are not the dataset.s classes \[.person., '):
        DATASETS.build(cfg)
    ds = DATASETS.build(dict(cfg, metainfo=dict(classes=('square', 'disc', 'triangle'))))
    assert len(ds) == 4


def test_verify_images_off_skips_the_count(tmp_path):
    pytest.importorskip('mmcv.ops', reason='mmdet needs mmcv built with its ops')
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmdet')
    _fake_coco(str(tmp_path), write_images={1})
    cfg = dict(type='mmdsnet.Coco2014Dataset', data_root=str(tmp_path) + '/',
               ann_file='annotations/instances_val2014.json', data_prefix=dict(img='val2014/'),
               test_mode=True, pipeline=[])
    with pytest.raises(CocoLayoutError, match='only 1 are in'):
        DATASETS.build(cfg)
    assert len(DATASETS.build(dict(cfg, verify_images=False))) == 10
