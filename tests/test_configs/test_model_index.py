"""model-index.yml and the metafiles: complete, true to the paper and the configs, and found by
mmpretrain's get_model / list_models once registered; every entry builds."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import yaml

from mmdsnet.utils import model_index as mi

from helpers import ROOT, load_tool

ENTRIES = mi.entries()
BY_NAME = {e['Name']: e for e in ENTRIES}


def _tool(name):
    return load_tool(f'analysis/{name}.py')


def test_every_config_has_one_entry():
    configs = sorted(
        osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', 'mmpretrain', '*',
                                                         '*.py'))
        + glob.glob(osp.join(ROOT, 'configs', 'mmdet', 'faster_rcnn', '*.py'))
        if '_base_' not in p)
    assert sorted(e['Config'] for e in ENTRIES) == configs
    assert len(BY_NAME) == len(ENTRIES)  # unique names
    for e in ENTRIES:
        assert e['Name'] == osp.splitext(osp.basename(e['Config']))[0]
        assert e['Weights'] is None  # none published yet
        meta = e['Metadata']
        assert isinstance(meta['Parameters'], int) and meta['Parameters'] > 0
        if mi.is_classification(e):
            assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 0
            assert meta['FLOPs Input'] == ('3x224x224' if 'in1k' in e['Name'] else '3x32x32')
    with open(mi.MODEL_INDEX) as f:
        assert sorted(yaml.safe_load(f)['Import']) == sorted(
            osp.relpath(p, ROOT) for p in mi.metafiles())


def test_results_are_the_papers_and_labelled_so():
    tables = _tool('paper_table').parse_zoo()
    seen = set()
    for t in tables:  # in table order: Results hold a config's first table's number
        for r in t['rows']:
            e = BY_NAME[r['config']]
            assert f'Table {t["tables"][0]}' in e['Metadata']['Paper Tables']
            assert r['row'] in e['Metadata']['Paper Rows']
            if r['paper'][0] is None:
                continue
            # every table's number (the paper prints ResNet101 0.25x as 25.00 and as 25.01)
            printed = ' / '.join('-' if v is None else f'{v:.2f}' for v in r['paper'])
            assert f'Table {t["tables"][0]}: {printed}' in e['Metadata']['Paper Error (%)']
            assert e['Results'][0]['Dataset'] == r['dataset']
            assert e['Metadata']['Results Source'].startswith("the paper's")
            if e['Name'] in seen:
                continue
            metrics = e['Results'][0]['Metrics']
            assert metrics['Top 1 Accuracy'] == pytest.approx(100 - r['paper'][0])
            if len(r['paper']) == 2 and r['paper'][1] is not None:  # ResNeXt-50: no top-5
                assert metrics['Top 5 Accuracy'] == pytest.approx(100 - r['paper'][1])
            seen.add(e['Name'])
    from mmdsnet.evaluation import PAPER_TABLE8 as coco
    for name, row in (('faster-rcnn_r50_fpn_5e_coco2014', 'ResNet50'),
                      ('faster-rcnn_dsnet50_fpn_5e_coco2014', 'DSNet50'),
                      ('faster-rcnn_ds2net50_fpn_5e_coco2014', 'DS2Net50')):
        m = BY_NAME[name]['Results'][0]['Metrics']
        assert (m['box AP@0.5'], m['box AP@0.75'], m['box AP']) == coco[row]
        seen.add(name)
    for e in ENTRIES:  # no result without a paper number behind it
        assert ('Results' in e) == (e['Name'] in seen), e['Name']


def test_listing_cli(capsys):
    assert mi.main(['*ds2net50_4xb32*']) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith('ds2net50_4xb32_in1k')
    assert 'Top 1 Accuracy 77.97' in out[1] and 'configs/mmpretrain/dsnet/' in out[1]
    assert mi.main(['*nothing*']) == 1


@pytest.fixture(scope='module')
def mmpretrain_hub():
    mmpretrain = pytest.importorskip('mmpretrain')
    names = mi.register_model_index()
    assert mi.register_model_index() == names  # a second call changes nothing
    return mmpretrain, names


def test_mmpretrain_finds_our_configs(mmpretrain_hub):
    mmpretrain, names = mmpretrain_hub
    assert sorted(names) == sorted(e['Name'] for e in ENTRIES if mi.is_classification(e))
    assert 'dsnet50_4xb32_in1k' in mmpretrain.list_models('*dsnet*')
    assert 'ds2net50-w0.25_1xb128_cifar100' in mmpretrain.list_models('ds2net50*')
    assert 'resnet50_8xb32_in1k' in mmpretrain.list_models('resnet50*')  # theirs still there
    # no weights published yet: said plainly, with how to make a checkpoint
    with pytest.raises(mi.NoPublishedCheckpointError, match=r'dsnet26-w0.25_1xb128_cifar100: no '
                       r'checkpoint is published .*python tools/train.py configs/mmpretrain/'
                       r'dsnet/dsnet26-w0.25_1xb128_cifar100.py'):
        mmpretrain.get_model('dsnet26-w0.25_1xb128_cifar100', pretrained=True)


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, as a user's script (this checkout first)."""
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # a user's script in a fresh interpreter
def test_import_mmdsnet_makes_mmpretrain_find_our_models():
    """The user's step: ``import mmdsnet``, then mmpretrain's list_models / get_model, with no
    register_model_index() call; import mmdsnet itself imports no mmpretrain."""
    pytest.importorskip('mmpretrain')
    out = _python(
        'import sys\n'
        'import mmdsnet\n'
        'assert "mmpretrain" not in sys.modules, "import mmdsnet imported mmpretrain"\n'
        'import mmpretrain\n'
        'from mmpretrain import get_model, list_models\n'
        'print("LIST", list_models("dsnet50_4xb32*"))\n'
        'try:\n'
        '    get_model("dsnet50_4xb32_in1k", pretrained=True)\n'
        'except ValueError as e:\n'
        '    print("ERROR", e)\n'
        'print("RESNET", list_models("resnet18_8xb32_in1k"))\n')
    assert "LIST ['dsnet50_4xb32_in1k']" in out
    assert 'ERROR dsnet50_4xb32_in1k: no checkpoint is published' in out
    assert 'python tools/train.py configs/mmpretrain/dsnet/dsnet50_4xb32_in1k.py' in out
    assert "RESNET ['resnet18_8xb32_in1k']" in out  # mmpretrain's own models still there


@pytest.mark.slow  # a user's script in a fresh interpreter
def test_custom_imports_after_mmpretrain_make_our_models_findable():
    """mmpretrain first, then a config's custom_imports (how mmpretrain's own tools run)."""
    pytest.importorskip('mmpretrain')
    cfg = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet26-w0.25_1xb128_cifar100.py')
    out = _python(
        'import mmpretrain\n'
        'from mmpretrain.apis import ModelHub\n'
        'from mmengine.config import Config\n'
        f'Config.fromfile({cfg!r})  # custom_imports: mmdsnet\n'
        'model = mmpretrain.get_model("dsnet26-w0.25_1xb128_cifar100")\n'
        'print("BUILT", type(model.backbone).__name__)\n'
        'print("HAS", ModelHub.has("ds2net50_4xb32_in1k"))\n')
    assert 'BUILT DSNet' in out and 'HAS True' in out


CLS = sorted(e['Name'] for e in ENTRIES if mi.is_classification(e))
DET = sorted(e['Name'] for e in ENTRIES if not mi.is_classification(e))


@pytest.mark.slow
@pytest.mark.parametrize('name', CLS)
def test_get_model_builds_every_classification_entry(mmpretrain_hub, name):
    mmpretrain, _ = mmpretrain_hub
    model = mmpretrain.get_model(name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == BY_NAME[name]['Metadata']['Parameters']
    assert type(model.backbone).__module__.split('.')[0] in ('mmdsnet', 'mmpretrain')


@pytest.mark.slow
@pytest.mark.parametrize('name', DET)
def test_every_detection_entry_builds(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(osp.join(ROOT, BY_NAME[name]['Config']))
    cfg.model.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == BY_NAME[name]['Metadata']['Parameters']
