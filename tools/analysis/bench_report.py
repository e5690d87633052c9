"""tools/analysis/benchmark.py's results: the stock baseline each ratio refers to, paired
per-round ratios, and the table beside the paper's Table 9."""
import statistics
from typing import Dict, List, Optional

# The paper's Table 9 (four 1080Ti GPUs, batch 32 per GPU): memory per GPU (MB), s / iteration.
PAPER = {
    'ResNet50': (3929, 0.31),
    'ResNet152': (7095, 0.63),
    'DenseNet264': (9981, 0.60),
    'DSNet50': (4777, 0.37),
    'DS2Net50': (5133, 0.39),
}
#: The stock ResNet50s every ratio refers to (the best of them in each run, per measure).
STOCK = ['ResNet50-mmdet', 'ResNet50-mmpretrain', 'ResNet50-torchvision']


def summary(xs: List[float]) -> dict:
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs), samples=xs)


def best_stock(res, value, lowest=True) -> Optional[str]:
    """The stock baseline with the best ``value(model result)`` in this run, or None."""
    found = [(value(res['models'][s]), s) for s in STOCK
             if s in res['models'] and value(res['models'][s]) is not None]
    return (min if lowest else max)(found)[1] if found else None


def paired_ratios(res, samples, specs, key, ratio_to: Optional[str] = None):
    """Median over rounds of (model time / reference time in the same round), the reference
    being ``ratio_to`` or else the fastest stock baseline: with alternation, a slow phase of a
    shared machine cancels out of each round's ratio."""
    base = ratio_to or best_stock(res, lambda m: m.get(key, {}).get('median'))
    res['reference'][key] = base
    if base is None:
        return
    for s in specs:
        ratios = [a / b for a, b in zip(samples[s], samples[base])]
        res['models'][s][key]['paired_ratio_median'] = statistics.median(ratios)
        res['models'][s][key]['paired_ratios'] = ratios



def _ratio(v, base):
    return None if v is None or base in (None, 0) else v / base


def references(res: dict, memory_key: str) -> Dict[str, Optional[str]]:
    """The stock baseline each ratio column divides by (named in the table's header)."""
    return {
        'time': best_stock(res, lambda m: m.get('train_time', {}).get('median')),
        'memory': best_stock(res, lambda m: m.get('memory', {}).get(memory_key)),
        'infer': best_stock(res, lambda m: m.get('infer_img_s'), lowest=False),
    }


def table(res: dict, memory_key: str) -> str:
    ref = references(res, memory_key)
    models = res['models']
    bt = models.get(ref['time'], {}).get('train_time', {}).get('median')
    bm = models.get(ref['memory'], {}).get('memory', {}).get(memory_key)
    bi = models.get(ref['infer'], {}).get('infer_img_s')
    rows = [('model', 'params M', 'GFLOPs', 'train s/it (min-max)', 'x ref', 'memory MB', 'x ref',
             'infer img/s', 'x ref', "paper's MB", 'x', "paper's s/it", 'x')]
    pr = PAPER['ResNet50']
    for spec, m in models.items():
        if 'missing' in m:
            rows.append((spec, f"missing: {m['missing']}", *([''] * 11)))
            continue
        t = m.get('train_time', {}).get('median')
        mem = m.get('memory', {}).get(memory_key)
        ips = m.get('infer_img_s')
        p = PAPER.get(spec)

        def f(v, fmt):
            return '-' if v is None else format(v, fmt)
        rows.append((
            spec, f(m.get('params_m'), '.2f'), f(m.get('gflops'), '.2f'),
            '-' if t is None else f"{t:.3f} ({m['train_time']['min']:.3f}-"
                                  f"{m['train_time']['max']:.3f})",
            f(_ratio(t, bt), '.3f'), f(mem, '.0f'), f(_ratio(mem, bm), '.3f'), f(ips, '.1f'),
            f(_ratio(ips, bi), '.3f'),
            f(p and p[0], 'd'), f(p and p[0] / pr[0], '.2f'), f(p and p[1], '.2f'),
            f(p and p[1] / pr[1], '.2f')))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ['| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |' for r in rows]
    lines.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    head = (f"Ratios ('x ref') to the best stock ResNet50 of this run: time {ref['time']}, "
            f"memory {ref['memory']}, inference {ref['infer']}. The paper's ratios are to its "
            f"ResNet50.")
    return head + '\n' + '\n'.join(lines)

