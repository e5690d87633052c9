"""FLOP counting, tracing and export with the default code, as users run them: mmpretrain's and
mmdet's own get_flops.py (from the installed packages), and tools/deployment/export_onnx.py
(torch.export -> ONNX, checked with onnxruntime). torch.compile / jit.trace / torch.export of the
backbone itself: tests/test_op_tracing.py."""
import os.path as osp
import sys

import pytest
import torch

from mmdsnet.models import DS2Net
from mmdsnet.ops import export_decompositions

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CIFAR_CFG = osp.join(ROOT, 'configs/mmpretrain/dsnet/ds2net50-w0.25_1xb128_cifar100.py')


def _upstream_tool(package, name):
    mod = __import__(package)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'tools', 'analysis_tools', name)
    if not osp.isfile(path):
        pytest.skip(f'{package} ships no {name} in this install')
    return path


def _run(script, *args):
    """``python SCRIPT ARGS`` from the repository, run in this process: stdout + stderr."""
    from tiny_runs import call_tool
    out = call_tool(script, *args)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow  # a tool run end to end
def test_mmpretrain_get_flops_counts_a_ds2net_config():
    out = _run(_upstream_tool('mmpretrain', 'get_flops.py'), CIFAR_CFG, '--shape', '32')
    assert 'Flops:' in out and 'Unsupported operator mmdsnet' not in out
    flops = next(line for line in out.splitlines() if line.startswith('Flops:'))
    assert 'M' in flops or 'G' in flops, flops


@pytest.mark.slow
def test_mmdet_get_flops_counts_the_demo_detector(tmp_path):
    from mmdsnet.datasets.synthetic_det import make_synthetic_coco
    make_synthetic_coco(str(tmp_path / 'data'), num_train=2, num_val=2)
    cfg = osp.join(ROOT, 'configs/demo/faster-rcnn_ds2net-tiny_fpn_shapes.py')
    out = _run(_upstream_tool('mmdet', 'get_flops.py'), cfg, '--num-images', '1',
               '--cfg-options', f'val_dataloader.dataset.data_root={tmp_path}/data/')
    assert 'Flops:' in out and 'Unsupported operator mmdsnet' not in out


def test_export_decompositions_equal_the_operators():
    """What exporters see (plain ATen operators) computes what the operators compute."""
    torch.manual_seed(0)  # the float32 rounding compared below depends on the values
    model = DS2Net(depth=26, base_channels=8, stem='cifar', shortcut_norm_cfg='BN').eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ours = model(x)[-1]
        ep = torch.export.export(model, (x, )).run_decompositions(export_decompositions())
    assert not any('mmdsnet' in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x)[-1], ours, rtol=1e-5, atol=1e-5)
    model.train()
    with torch.no_grad():  # batch statistics (GN / training BN) through the decomposition too
        m2 = DS2Net(depth=26, base_channels=8, stem='cifar').eval()
        ep = torch.export.export(m2, (x, )).run_decompositions(export_decompositions())
        torch.testing.assert_close(ep.module()(x)[-1], m2(x)[-1], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def export_onnx():
    """tools/deployment/export_onnx.py as a module: its main(argv) runs in this process (an
    export costs tens of seconds; a fresh interpreter would add the imports to each)."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    sys.path.insert(0, osp.join(ROOT, 'tools', 'deployment'))
    try:
        import export_onnx
    finally:
        sys.path.pop(0)
    return export_onnx


def _onnx_axes(path):
    import onnx
    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.input) + list(graph.output)}


@pytest.mark.slow
def test_onnx_export_is_dynamic_named_by_stage_and_refuses_a_mismatch(export_onnx, tmp_path,
                                                                     capsys):
    """A DS2Net backbone (operators, DS2's inner shortcuts): batch and H x W dynamic by default,
    onnxruntime equal to PyTorch at two batch sizes and two input sizes, outputs named after
    the stages; a tolerance the export cannot meet stops, naming the largest difference."""
    cfg = osp.join(ROOT, 'configs/mmpretrain/dsnet/ds2net26-w0.25_1xb128_cifar100.py')
    options = ['--cfg-options', 'model.backbone.out_indices=(0,1,2,3)']
    torch.manual_seed(0)
    export_onnx.main([cfg, '--shape', '32', '32', '--out', str(tmp_path / 'd.onnx'), *options])
    out = capsys.readouterr().out
    assert 'onnxruntime matches PyTorch to' in out, out
    assert 'on 1x3x32x32, 3x3x32x32, 1x3x48x40, 3x3x48x40 inputs' in out, out
    assert 'input: batch x 3 x height x width; outputs: layer1, layer2, layer3, layer4' in out
    axes = _onnx_axes(tmp_path / 'd.onnx')
    assert list(axes) == ['input', 'layer1', 'layer2', 'layer3', 'layer4']
    assert axes['input'] == ['batch', 3, 'height', 'width']
    assert axes['layer1'] == ['batch', 64, 'height', 'width']  # CIFAR stem: no stride
    assert axes['layer4'][:2] == ['batch', 512] and 'height' in axes['layer4'][2]
    torch.manual_seed(0)  # the same weights as the export's model
    model = export_onnx.build_backbone(cfg, cfg_options={'model.backbone.out_indices': (0, 1, 2,
                                                                                        3)})
    shapes = export_onnx.check_shapes((32, 32), 1, True)
    assert export_onnx.check(model, str(tmp_path / 'd.onnx'), shapes, atol=1e-4) > 0
    with pytest.raises(SystemExit, match='error: onnxruntime and PyTorch differ by up to'):
        export_onnx.check(model, str(tmp_path / 'd.onnx'), shapes, atol=0)


@pytest.mark.slow
def test_onnx_export_with_a_fixed_shape(export_onnx, tmp_path, capsys):
    cfg = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet26-w0.25_1xb128_cifar100.py')
    export_onnx.main([cfg, '--shape', '32', '32', '--fixed-shape', '--batch', '2', '--out',
                      str(tmp_path / 'f.onnx')])
    out = capsys.readouterr().out
    assert 'fixed shape' in out and 'on 2x3x32x32 inputs' in out, out
    assert _onnx_axes(tmp_path / 'f.onnx')['input'] == [2, 3, 32, 32]
    assert list(_onnx_axes(tmp_path / 'f.onnx')) == ['input', 'layer4']


@pytest.mark.slow
def test_onnx_export_of_the_full_classifier(export_onnx, tmp_path, capsys):
    """--full-model: input -> cls_score, the same scores as the classifier in PyTorch; a
    detection config has no classifier to export."""
    import numpy as np
    import onnxruntime
    cfg = osp.join(ROOT, 'configs/mmpretrain/dsnet/dsnet26-w0.25_1xb128_cifar100.py')
    model = export_onnx.build_classifier(cfg)
    torch.save(dict(state_dict=model.classifier.state_dict()), tmp_path / 'ckpt.pth')
    export_onnx.main([cfg, '--full-model', '--shape', '32', '32', '--out',
                      str(tmp_path / 'm.onnx'), '--checkpoint', str(tmp_path / 'ckpt.pth')])
    out = capsys.readouterr().out
    assert 'onnxruntime matches PyTorch' in out and '3x3x48x40' in out, out
    axes = _onnx_axes(tmp_path / 'm.onnx')
    assert list(axes) == ['input', 'cls_score']
    assert axes['cls_score'] == ['batch', 100]
    x = torch.randn(2, 3, 36, 36)
    session = onnxruntime.InferenceSession(str(tmp_path / 'm.onnx'),
                                           providers=['CPUExecutionProvider'])
    (scores, ) = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(scores, model.classifier(x, mode='tensor').numpy(), atol=1e-4)
    det = osp.join(ROOT, 'configs/demo/faster-rcnn_ds2net-tiny_fpn_shapes.py')
    with pytest.raises(SystemExit, match='error: --full-model exports classifiers'):
        export_onnx.main([det, '--full-model', '--out', str(tmp_path / 'x.onnx')])
