"""Every config spells our classes one way and agrees with its backbone's channels."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from mmdsnet.engine import check_cfg
from mmdsnet.engine.cfg_checks import OUR_TYPES, iter_typed

from helpers import ROOT

CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(osp.sep))
IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]


def test_configs_found():
    assert len(CONFIGS) >= 70


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_one_spelling(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmdsnet'], allow_failed_imports=False)
    ours = [(key, node) for key, node in iter_typed(cfg.to_dict())
            if node['type'].rpartition('.')[2] in OUR_TYPES + ('Coco2014Dataset', )]
    for key, node in ours:
        assert node['type'].startswith('mmdsnet.'), f'{key}.type={node["type"]!r}'
        # DS2Net is type='mmdsnet.DS2Net', never DSNet + inner_shortcut
        assert 'inner_shortcut' not in (node.get('block_cfg') or {}), key
    if 'mmpretrain' in path or 'mmdet' in path:
        # every model config builds one of our backbones, except the stock Table 7 baselines
        # that are mmpretrain's own networks (DenseNet, Res2Net), scoped as such
        stock = cfg.model.backbone.type in ('mmpretrain.DenseNet', 'mmpretrain.Res2Net')
        assert any(key == 'model.backbone' for key, _ in ours) or stock, cfg.model.backbone.type


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_head_and_neck_take_the_backbone_channels(path):
    """What tools/train.py checks before the Runner starts, on every shipped config."""
    assert check_cfg(Config.fromfile(path)) == []
