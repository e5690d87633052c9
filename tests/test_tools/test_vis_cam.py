"""tools/visualization/vis_cam.py: Grad-CAM of several checkpoints, on the CPU, offline."""

import numpy as np
import pytest
import torch
from tiny_runs import run_tool, tiny_setup

from helpers import load_tool, randomize

pytest.importorskip('pytorch_grad_cam')


@pytest.fixture(scope='module')
def vc():
    return load_tool('visualization/vis_cam.py')


def classifier(backbone: dict, in_channels: int):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever ran before
        return MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                                 neck=dict(type='GlobalAveragePooling'),
                                 head=dict(type='LinearClsHead', num_classes=4,
                                           in_channels=in_channels)))


def test_default_target_layer_is_the_last_stage(vc):
    tiny = dict(stem='cifar', base_channels=8)
    assert vc.default_target_layer(
        classifier(dict(type='mmdsnet.DSNet', depth=26, **tiny), 256)) == 'backbone.layer4'
    assert vc.default_target_layer(  # 3-stage CIFAR net (DSNeXt-29)
        classifier(dict(type='mmdsnet.DSNet', depth=29, **tiny), 128)) == 'backbone.layer3'
    assert vc.default_target_layer(
        classifier(dict(type='ResNet', depth=18), 512)) == 'backbone.layer4'
    assert vc.default_target_layer(
        classifier(dict(type='DenseNet', arch='121'), 1024)) == 'backbone.transitions.3'


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    """The tiny ResNet / DSNet / DS2Net configs with random-weight checkpoints (no training)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import init_model
    setup = tiny_setup(tmp_path_factory)
    tmp = setup['tmp']
    configs = dict(setup['configs'])
    configs['tiny_ds2net26_cifar100'] = tmp / 'tiny_ds2net26_cifar100.py'
    configs['tiny_ds2net26_cifar100'].write_text(
        "_base_ = ['./tiny_dsnet26_cifar100.py']\n"
        "model = dict(backbone=dict(block_cfg=dict(inner_shortcut=True)))\n")
    import sys
    sys.path.insert(0, str(tmp))  # the configs' custom_imports (md5 helper)
    ckpts = {}
    for i, (name, cfg) in enumerate(sorted(configs.items())):
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = randomize(init_model(Config.fromfile(str(cfg))), seed=i)
        ckpts[name] = tmp / f'{name}_random.pth'
        torch.save(dict(state_dict=model.state_dict(),
                        meta=dict(dataset_meta=dict(classes=[f'c{k}' for k in range(100)]))),
                   ckpts[name])
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        img = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
        img[8:24, 8:24, i] += 150  # a square object
        images.append(tmp / f'img{i}.png')
        import cv2
        cv2.imwrite(str(images[-1]), img)
    return dict(tmp=tmp, configs=configs, ckpts=ckpts, images=images)


def test_cam_is_grad_cam_of_the_target_layer(vc, tiny_models):
    """The tool's map equals Grad-CAM computed by hand at backbone.layer4 (the stage output)."""
    import cv2
    name = 'tiny_dsnet26_cifar100'
    m = vc.CamModel(str(tiny_models['configs'][name]), str(tiny_models['ckpts'][name]))
    assert m.layer_name == 'backbone.layer4' and m.channel_order == 'rgb'
    img = vc.read_image(str(tiny_models['images'][0]), m.channel_order)
    res = m.cam(img)
    inputs, shown = m.prepare(img)
    assert shown.shape == (32, 32, 3) and res['cam'].shape == (32, 32)

    acts = []
    handle = m.layer.register_forward_hook(lambda mod, i, o: acts.append(o))
    logits = m.model(inputs, mode='tensor')
    handle.remove()
    assert res['pred'] == int(logits.argmax()) and res['label'] == f'c{res["pred"]}'
    grad = torch.autograd.grad(logits[0, res['pred']], acts[0])[0]
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * acts[0]).sum(1))[0].detach().numpy()
    for _ in range(2):  # grad-cam normalises per layer, then after merging layers
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
        cam = cv2.resize(cam, (32, 32))
    assert cam.std() > 0.05  # a real map, not a constant
    np.testing.assert_allclose(res['cam'], cam, atol=1e-4)
    # another class gives another map
    other = m.cam(img, target_category=(res['pred'] + 1) % 100)
    assert not np.allclose(other['cam'], res['cam'], atol=1e-3)


def test_bad_target_layer_lists_the_valid_names(vc, tiny_models):
    name = 'tiny_dsnet26_cifar100'
    with pytest.raises(vc.TargetLayerError) as err:
        vc.CamModel(str(tiny_models['configs'][name]), str(tiny_models['ckpts'][name]),
                    target_layer='backbone.layer5')
    msg = str(err.value)
    assert "'backbone.layer5' is not a module of tiny_dsnet26_cifar100" in msg
    for valid in ('backbone.layer1', 'backbone.layer4', 'neck', 'head.fc'):
        assert valid in msg
    assert '--list-layers' in msg and '\n' not in msg
    # a checkpoint of another model: refused, not half-loaded
    with pytest.raises(ValueError, match='does not fit'):
        vc.CamModel(str(tiny_models['configs'][name]),
                    str(tiny_models['ckpts']['tiny_ds2net26_cifar100']))


@pytest.mark.slow
def test_cli_side_by_side_png(tiny_models):
    t = tiny_models
    names = ['tiny_resnet26_cifar100', 'tiny_dsnet26_cifar100', 'tiny_ds2net26_cifar100']
    out = t['tmp'] / 'fig5.png'
    _, log = run_tool(t['tmp'], 'visualization/vis_cam.py', *t['images'], '--configs',
                      *[t['configs'][n] for n in names], '--checkpoints',
                      *[t['ckpts'][n] for n in names], '--names', 'ResNet', 'DSNet', 'DS2Net',
                      '--out', out)
    assert f'wrote {out}' in log
    from PIL import Image
    with Image.open(out) as im:  # 2 image columns; input row + 3 model rows, 2.2 in each
        assert im.format == 'PNG' and im.size == (500, 880)
    # a wrong layer name: one line, exit 1, the valid names listed
    code, log = run_tool(t['tmp'], 'visualization/vis_cam.py', t['images'][0], '--configs',
                         t['configs'][names[1]], '--checkpoints', t['ckpts'][names[1]],
                         '--target-layers', 'backbone.stage4', check=False)
    assert code == 1
    lines = [line for line in log.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'valid names:' in lines[0] and 'backbone.layer4' in lines[0]


@pytest.mark.parametrize('columns', [1, 2, 4])
def test_every_text_of_the_figure_lies_inside_it(vc, columns, tmp_path, monkeypatch):
    """One image column makes a 2.8-inch figure: the title must wrap, not lose its ends
    ("am: class activation maps ..." in the PNG before)."""
    from types import SimpleNamespace

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    drawn = []
    monkeypatch.setattr(plt, 'close', drawn.append)  # keep the figure draw() saved
    rng = np.random.default_rng(0)
    models = [SimpleNamespace(name='DS2Net-26', layer_name='backbone.layer4')]
    results = [[dict(image=rng.random((32, 32, 3)).astype(np.float32),
                     cam=rng.random((32, 32)).astype(np.float32),
                     label='aquarium_fish', score=0.51) for _ in range(columns)]]
    images = [f'cifar_test_{i}.png' for i in range(columns)]
    vc.draw(images, models, results, str(tmp_path / 'cam.png'), 'gradcam++')
    (fig, ) = drawn
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert any('class activation maps' in t.get_text() for t in texts)
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert box.x0 - 0.5 <= ext.x0 and ext.x1 <= box.x1 + 0.5, (t.get_text(), ext, box)
        assert box.y0 - 0.5 <= ext.y0 and ext.y1 <= box.y1 + 0.5, (t.get_text(), ext, box)
    fig.clf()
