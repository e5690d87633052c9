"""COCO bbox metrics in the three columns of the paper's Table 8, beside the paper's rows.

Shared by ``tools/test.py`` (the Table 8 view of a test run), ``tools/analysis/coco_table.py``
(several runs side by side) and ``tools/demo.py`` (the columns). The paper's rows are shown only
beside numbers measured on COCO 2014 (:func:`is_coco2014`): next to the demo's shapes they would
read as comparable.
"""
import glob
import json
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

#: CocoMetric keys (mmdet 3.x, ``metric='bbox'``) for the three columns of Table 8.
COLUMNS: Tuple[Tuple[str, str], ...] = (
    ('mAP@.5', 'coco/bbox_mAP_50'),
    ('mAP@.75', 'coco/bbox_mAP_75'),
    ('mAP@[.5:.95]', 'coco/bbox_mAP'),
)

#: The paper's Table 8: "mAP (%) on MS COCO validation dataset", Faster R-CNN,
#: ImageNet-pretrained backbones fine-tuned 5 epochs. Copied from the paper, not measured here.
PAPER_TABLE8: Dict[str, Tuple[float, float, float]] = {
    'ResNet50': (51.3, 33.6, 31.4),
    'DSNet50': (54.2, 36.0, 33.7),
    'DS2Net50': (54.3, 36.2, 33.7),
}


def read_json_records(path: str) -> List[dict]:
    """Every dict in a json file or a json-lines file (MMEngine's logs and scalars.json)."""
    with open(path) as f:
        text = f.read()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and isinstance(obj.get('trained'), dict):  # demo_results.json
            return [obj['trained']]
        return [obj] if isinstance(obj, dict) else [o for o in obj if isinstance(o, dict)]
    except json.JSONDecodeError:
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out


def _normalise(rec: dict) -> Optional[Dict[str, float]]:
    """The three metrics of ``rec`` (keys with or without the ``coco/`` prefix), else None."""
    out = {}
    for _, key in COLUMNS:
        for k in (key, key.split('/', 1)[1]):
            if isinstance(rec.get(k), (int, float)):
                out[key] = float(rec[k])
                break
    return out if len(out) == len(COLUMNS) else None


def read_metrics(path: str) -> Tuple[Dict[str, float], str]:
    """The last COCO bbox metrics found in ``path`` (a work dir or a json file).

    Returns:
        tuple: ``(metrics, source_file)``; metrics keyed like CocoMetric (fractions, 0-1).

    Raises:
        FileNotFoundError: nothing under ``path`` holds the three metrics.
    """
    if osp.isfile(path):
        files = [path]
    elif osp.isdir(path):
        files = sorted(glob.glob(osp.join(path, '**', '*.json'), recursive=True),
                       key=osp.getmtime)
    else:
        raise FileNotFoundError(f'{path}: no such work dir or json file')
    for f in reversed(files):  # newest first
        try:
            recs = read_json_records(f)
        except (OSError, UnicodeDecodeError):
            continue
        found = [m for m in map(_normalise, recs) if m]
        if found:
            return found[-1], f
    raise FileNotFoundError(
        f'no COCO bbox metrics ({", ".join(k for _, k in COLUMNS)}) in any json under {path}: '
        f'has its run reached an evaluation (val_interval) or been tested with tools/test.py?')


def format_table(rows: List[Tuple[str, str, Tuple[float, float, float]]]) -> str:
    """A markdown table: name, source, then the three columns in percent."""
    head = ['model', 'source'] + [c for c, _ in COLUMNS]
    body = [[name, src] + [f'{v:.1f}' for v in vals] for name, src, vals in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: '| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'  # noqa: E731
    sep = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
    return '\n'.join([fmt(head), sep] + [fmt(r) for r in body])


def build_rows(paths: List[str], names: Optional[List[str]] = None, paper: bool = True):
    """Rows for :func:`format_table`: the paper's Table 8 first, then each run."""
    if names and len(names) != len(paths):
        raise ValueError(f'--names has {len(names)} entries for {len(paths)} runs')
    rows = []
    if paper:
        rows += [(f'{k} (paper, Table 8)', 'paper: "MS COCO validation"', v)
                 for k, v in PAPER_TABLE8.items()]
    for i, p in enumerate(paths):
        metrics, src = read_metrics(p)
        name = names[i] if names else osp.basename(osp.normpath(p))
        shown = osp.relpath(src) if not osp.relpath(src).startswith('..') else osp.abspath(src)
        rows.append((name, shown, tuple(100 * metrics[k] for _, k in COLUMNS)))
    return rows


#: Evaluation files of COCO 2014: the paper's val2014, and minival2014 (its 5k subset, = val2017).
_COCO2014_EVAL = re.compile(r'(^|/)instances_(val|minival)2014\.json$')


def is_coco2014(ann_file) -> bool:
    """Whether ``ann_file`` (an evaluator's) is COCO 2014's val2014 or minival2014 json."""
    return isinstance(ann_file, str) and bool(_COCO2014_EVAL.search(ann_file))


def table8_view(metrics: dict, name: str, evaluator) -> str:
    """A test run's COCO bbox metrics in Table 8's columns ('' without them); the paper's rows
    come first only when ``evaluator`` (the config's ``test_evaluator``: a dict or a list)
    scored on COCO 2014."""
    if not all(isinstance(metrics.get(k), float) for _, k in COLUMNS):
        return ''
    evaluators = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    ann_file = next((e['ann_file'] for e in evaluators if isinstance(e, dict)
                     and e.get('ann_file')), None)
    run = (osp.basename(name), 'this run', tuple(100 * metrics[k] for _, k in COLUMNS))
    if is_coco2014(ann_file):
        return format_table(build_rows([]) + [run])
    return (format_table([run]) + f'\n(the paper\'s Table 8 rows are shown only beside COCO 2014 '
            f'results; this run was scored on {ann_file or "a set without an ann_file"})')
