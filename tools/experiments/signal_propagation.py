"""Signal propagation through the stages: forward scale of every ``Y_l``, the gradient reaching it,
and the shortcut weights ``W``, at initialization and over the first training steps.

For each variant (a DS config with ``--cfg-options``-style overrides, or its identity twin), on
real images (the textures-10 set of tools/experiments/learning_check.py):

* at initialization, per block ``l`` of every stage: the standard deviation of ``Y_l`` over a
  batch, and the root mean square of ``dL/dY_l`` (cross-entropy of the untrained classifier);
* during the first ``--steps`` training steps (the learning check's recipe), the same at a few
  steps, plus per stage the mean of ``W_l^{l-1}`` (the shortcut from the previous block) and of
  the other ``W_l^i`` (the dense ones).

    python tools/experiments/signal_propagation.py --variants twin 'shortcut_init=1.0' \\
        "shortcut_init='last'" --steps 60

``Y_l`` is taken from the stage's own modules: the output of its ReLU (``Y_0``, and every ``Y_l``
in identity mode) and of its :class:`~mmdsnet.models.layers.DenseAggregation` (``Y_l``, l >= 1).
"""
import argparse
import ast
import os.path as osp
import sys
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import learning_check as lc  # noqa: E402


class Probe:
    """Records ``std(Y_l)`` and the RMS of ``dL/dY_l`` for every block of every stage."""

    def __init__(self, backbone):
        self.records: Dict[str, list] = {}
        self.handles = []
        for name in backbone.res_layers:
            stage = getattr(backbone, name)
            modules = [stage.act] + ([stage.aggregation] if hasattr(stage, 'aggregation') else [])
            for m in modules:
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, stage_name):
        def hook(module, args, out):
            out = getattr(out, 'y', out)  # an aggregation's output prepared as a source
            entry = dict(std=out.detach().float().std().item(), grad=None)
            self.records.setdefault(stage_name, []).append(entry)
            if out.requires_grad:
                def grad_hook(g, entry=entry):
                    entry['grad'] = g.detach().float().pow(2).mean().sqrt().item()
                out.register_hook(grad_hook)
        return hook

    def reset(self):
        self.records = {}


def w_stats(backbone) -> Dict[str, tuple]:
    """Per stage: mean of W_l^{l-1} (previous block) and of the other W_l^i, over l and C."""
    out = {}
    for name in backbone.res_layers:
        stage = getattr(backbone, name)
        if not hasattr(stage, 'aggregation') or stage.aggregation.shortcuts[0].weight is None:
            continue
        prev, dense = [], []
        for sc in stage.aggregation.shortcuts:
            w = sc.weight.detach()
            prev.append(w[-1].mean().item())
            dense += [w[i].mean().item() for i in range(w.shape[0] - 1)]
        out[name] = (sum(prev) / len(prev), sum(dense) / len(dense) if dense else float('nan'))
    return out


def measure(model, probe, x, y) -> Dict[str, list]:
    probe.reset()
    model.zero_grad(set_to_none=True)
    logits = model.head.fc(model.neck(model.backbone(x))[-1])
    F.cross_entropy(logits, y).backward()
    model.zero_grad(set_to_none=True)
    return {k: [dict(e) for e in v] for k, v in probe.records.items()}


def fmt(records: Dict[str, list], key: str) -> str:
    return '  '.join(f'{stage}: ' + ' '.join(f'{e[key]:.3g}' for e in entries)
                     for stage, entries in records.items())


def backbone_options(spec: str) -> dict:
    """``"a=1, b={'type': 'GN', 'eps': 1e-3}"`` -> ``{'a': 1, 'b': {...}}`` (Python literals)."""
    try:
        call = ast.parse(f'dict({spec})', mode='eval').body
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError) as e:
        raise SystemExit(f'error: variant {spec!r} is not KEY=VALUE[,KEY=VALUE...] with Python '
                         f'literal values ({e})') from None


def run_variant(spec: str, data, steps: int, report_at: List[int], seed: int = 0, log=print):
    twin = spec == 'twin'
    options = {} if twin else {f'model.backbone.{k}': v for k, v in backbone_options(spec).items()}
    cfg = lc.load_cfg('dsnet50', options)
    torch.manual_seed(seed)
    model = lc.build_model(cfg, 10, twin)
    probe = Probe(model.backbone)
    mean, std = data['x_train'].mean(), data['x_train'].std()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(data['x_train']), (64, ), generator=gen)
    x, y = (data['x_train'][idx] - mean) / std, data['y_train'][idx]
    model.train()
    log(f'== {spec}')
    rec = measure(model, probe, x, y)
    log(f'  init      std(Y_l):  {fmt(rec, "std")}')
    log(f'  init  rms dL/dY_l:  {fmt(rec, "grad")}')
    if steps:
        optimizer = lc.build_optimizer(cfg, model)
        base = [g['lr'] for g in optimizer.param_groups]
        for step in range(1, steps + 1):
            for g, b in zip(optimizer.param_groups, base):
                g['lr'] = lc.lr_at(step - 1, 300, 50, b)
            idx = torch.randint(0, len(data['x_train']), (64, ), generator=gen)
            xb, yb = (data['x_train'][idx] - mean) / std, data['y_train'][idx]
            loss = F.cross_entropy(model.head.fc(model.neck(model.backbone(xb))[-1]), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step in report_at:
                rec = measure(model, probe, x, y)
                log(f'  step {step:<4} loss {loss.item():.3f}  std(Y_l): {fmt(rec, "std")}')
                log(f'  step {step:<4} rms dL/dY_l: {fmt(rec, "grad")}')
                ws = w_stats(model.backbone)
                if ws:
                    log(f'  step {step:<4} mean W_l^(l-1) / other W_l^i: ' + '  '.join(
                        f'{k}: {a:.3f} / {b:.3f}' for k, (a, b) in ws.items()))
    for h in probe.handles:
        h.remove()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variants', nargs='+', default=['twin', 'shortcut_init=1.0'],
                   help="'twin' (identity mode) or comma-separated backbone overrides, e.g. "
                   "\"shortcut_init='last',zero_init_residual=False\"")
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--report-at', nargs='+', type=int, default=[10, 30, 60])
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')
    data = lc.textures10()
    for spec in args.variants:
        run_variant(spec, data, args.steps, args.report_at)


if __name__ == '__main__':
    main()
