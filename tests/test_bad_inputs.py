"""The bad inputs of docs/robustness.md: each gets a message that names the problem and the fix."""
import pytest
from mmengine.config import Config

import mmdsnet  # noqa: F401
from mmdsnet.engine import ConfigError, check_cfg


def test_unknown_backbone_argument_in_a_config_names_class_and_argument():
    registry = pytest.importorskip('mmpretrain.registry').MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(TypeError, match=r"DSNet.*unexpected keyword argument 'dcn'"):
            registry.build(dict(type='DSNet', depth=50, dcn=dict(type='DCNv2')))


@pytest.mark.parametrize('type_name', ['mmdet.DSNet', 'mmpretrain.DS2Net'])
def test_wrongly_scoped_type_is_refused_with_the_fix(type_name):
    cfg = Config(dict(default_scope='mmdet', custom_imports=dict(imports=['mmdsnet']),
                      model=dict(type='FasterRCNN', backbone=dict(type=type_name))))
    name = type_name.split('.')[1]
    with pytest.raises(ConfigError, match=rf"model.backbone.type='{type_name}': {name} is "
                       rf"registered by mmdsnet.*Write type='{name}' or type='mmdsnet.{name}'"):
        check_cfg(cfg)


def test_missing_default_scope_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"default_scope is None.*default_scope='mmpretrain'"):
        check_cfg(Config(dict(model=dict(type='ImageClassifier'))))


def test_missing_custom_imports_warns_about_upstream_tools():
    cfg = Config(dict(default_scope='mmpretrain',
                      model=dict(type='ImageClassifier', backbone=dict(type='DSNet'))))
    (warning, ) = check_cfg(cfg)
    assert "no custom_imports=dict(imports=['mmdsnet']" in warning
    cfg.custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)
    assert check_cfg(cfg) == []


def test_train_tool_stops_on_a_wrongly_scoped_config(tmp_path):
    import subprocess
    import sys
    cfg = tmp_path / 'bad.py'
    cfg.write_text("default_scope = 'mmpretrain'\n"
                   "model = dict(type='ImageClassifier', backbone=dict(type='mmdet.DSNet'))\n")
    out = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir',
                          str(tmp_path / 'wd')], capture_output=True, text=True,
                         cwd=__file__.rsplit('/tests/', 1)[0])
    assert out.returncode == 1
    assert "error: " in out.stderr and "registered by mmdsnet, not by mmdet" in out.stderr
    assert 'Traceback' not in out.stderr


def _train(args, tmp_path):
    import subprocess
    import sys
    root = __file__.rsplit('/tests/', 1)[0]
    return subprocess.run([sys.executable, 'tools/train.py', *args], capture_output=True,
                          text=True, cwd=root)


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from test_dist_resume import write_cfg
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=2, interval=2)
    out = _train([cfg, '--work-dir', str(tmp_path / 'a')], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = str(tmp_path / 'a' / 'iter_2.pth')
    # the same checkpoint fits its own architecture (one log line) ...
    out = _train([cfg, '--work-dir', str(tmp_path / 'b'), '--cfg-options', f'load_from={ckpt}',
                  'train_cfg.max_iters=1'], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'model tensors match' in out.stdout + out.stderr
    # ... and is refused by another (DSNet-38 at twice the width), before any training
    out = _train([cfg, '--work-dir', str(tmp_path / 'c'), '--cfg-options', f'load_from={ckpt}',
                  'model.backbone.depth=38', 'model.backbone.base_channels=16',
                  'model.head.in_channels=512'], tmp_path)
    assert out.returncode == 1
    assert 'fewer than 90%: it was saved from another architecture' in out.stderr
    assert 'with another shape' in out.stderr and 'Traceback' not in out.stderr


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    from test_dist_resume import write_cfg
    cfg = write_cfg(tmp_path, frozen=-1, with_cp=False, iters=1, interval=1)
    bogus = tmp_path / 'notes.pth'
    bogus.write_text('these are my notes, not weights')
    out = _train([cfg, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                  f'load_from={bogus}'], tmp_path)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert f'{bogus}' in out.stderr and 'is not a PyTorch checkpoint' in out.stderr
