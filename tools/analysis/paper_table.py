"""The paper's tables with the "ours" column filled from one's own runs.

    python tools/analysis/paper_table.py work_dirs/ --benchmark work_dirs/bench.json \\
        --out work_dirs/paper_tables.md
    python tools/analysis/paper_table.py work_dirs/dsnet50_4xb32_in1k --tables 7

Tables 1-7: every row of docs/model_zoo.md (the paper's number, the config that trains it),
with our top-1 error (Table 7: top-1 / top-5) from the run of that config, and ours - paper.
Table 8: the detection runs' COCO mAP beside the paper's, as ``coco_table.py`` reads them.
Table 9: memory and time per iteration from ``benchmark.py --out`` JSON, as ratios to ResNet50
beside the paper's ratios (absolute numbers from different machines do not compare).

Each argument is a work dir, or a folder with work dirs at any depth up to four folders below
(``work_dirs/``, ``experiments/``). A work dir is what a run leaves: a ``<timestamp>/`` folder
with its ``.log`` or a ``.json`` of metrics, and usually beside it the config copy MMEngine
writes; a folder that only holds ``.py`` files is not one, and is searched further. A work dir
belongs to the config whose copy is in it (``<work_dir>/<config>.py``), else to the config
named like the dir (the default ``work_dirs/<config>``). A row left missing although a folder
looked like its run (named like its config, or holding its config) says which folder and why it
did not count, and the end of the report lists such folders; no work dir at all under the
folders given is an error (exit 1). Its result is the last evaluation in its newest json
log: ``<timestamp>/<timestamp>.json`` (``tools/test.py``) or
``<timestamp>/vis_data/scalars.json`` (validation while training); mmpretrain logs accuracy, so
error = 100 - ``accuracy/top1``. A row without a run, or a run without the metric, reads
"missing", never a number. The paper's numbers are labelled as the paper's.
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ZOO = osp.join(ROOT, 'docs', 'model_zoo.md')
MISSING = 'missing'

# The paper's numbers for Tables 8 and 9 live with the code that measures them (one copy each).
from mmdsnet.evaluation import COLUMNS as COCO_COLUMNS  # noqa: E402
from mmdsnet.evaluation import PAPER_TABLE8, read_metrics  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its modules, however it is run
from work_dirs import (MAX_DEPTH, WorkDirs, config_of, index_work_dirs,  # noqa: E402,F401
                       read_accuracy)

#: Table 8 rows -> the configs that train them (the full name, then the short alias).
TABLE8_CONFIGS = {
    'ResNet50': ('faster-rcnn_r50_fpn_5e_coco2014', 'faster_rcnn_r50_coco'),
    'DSNet50': ('faster-rcnn_dsnet50_fpn_5e_coco2014', 'faster_rcnn_dsnet50_coco'),
    'DS2Net50': ('faster-rcnn_ds2net50_fpn_5e_coco2014', 'faster_rcnn_ds2net50_coco'),
}


# ---------------------------------------------------------------------------- docs/model_zoo.md
def parse_zoo(path: str = ZOO) -> List[dict]:
    """Tables 1-7 of docs/model_zoo.md.

    Returns:
        list[dict]: one per table: ``tables`` (the paper's table numbers under that heading),
        ``title`` and ``rows``; a row has ``row`` (paper row), ``dataset``, ``config`` (name),
        ``config_path`` (relative to the repo) and ``paper`` (a tuple of errors in percent, one
        per metric, ``None`` where the paper prints none).
    """
    with open(path) as f:
        lines = f.read().splitlines()
    tables, current, header = [], None, None
    for line in lines:
        heading = re.match(r'###\s+Tables?\s+([\d\s,and]+):\s*(.*)', line)
        if heading:
            numbers = [int(n) for n in re.findall(r'\d+', heading.group(1))]
            current = dict(tables=numbers, title=heading.group(2).strip(), rows=[])
            tables.append(current)
            header = None
            continue
        if current is None or not line.startswith('|'):
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(''.join(cells)) <= set('-: '):  # the |---| rule
            continue
        col = {name: i for i, name in enumerate(header)}
        link = re.match(r'\[([^\]]+)\]\(([^)]+)\)', cells[_find(header, 'config')])
        if not link:
            raise ValueError(f'{path}: no config link in row {line!r}')
        paper_cell = cells[_find(header, 'paper', 'err')]
        paper = tuple(None if v.strip() in ('-', '') else float(v)
                      for v in paper_cell.split('/'))
        current['rows'].append(dict(
            row=cells[col['paper row']], dataset=cells[col['dataset']] if 'dataset' in col
            else 'ImageNet-1k', config=link.group(1),
            config_path=osp.normpath(osp.join('docs', link.group(2))), paper=paper))
    if not tables or any(not t['rows'] for t in tables):
        raise ValueError(f'{path}: no "### Table N: ..." headings with rows of configs')
    return tables


def _find(header: Sequence[str], *words: str) -> int:
    for i, h in enumerate(header):
        if all(w in h for w in words):
            return i
    raise ValueError(f'no column with {words} in {header}')


# -------------------------------------------------------------------------------------- tables
def _num(v: Optional[float], fmt: str = '.2f') -> str:
    return '-' if v is None else format(v, fmt)


def _diff(ours: Optional[float], paper: Optional[float], fmt: str = '+.2f') -> str:
    return '-' if ours is None or paper is None else format(ours - paper, fmt)


def _no_run(runs, config: str, default: str = 'no run') -> str:
    note = runs.note_for(config) if isinstance(runs, WorkDirs) else None
    return note or default


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |'  # noqa
    return '\n'.join([fmt(head), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
                     + [fmt(r) for r in rows])


def classification_table(table: dict, runs: Dict[str, str]) -> str:
    two = any(len(r['paper']) == 2 for r in table['rows'])
    metric = 'top-1 / top-5 err. (%)' if two else 'top-1 err. (%)'
    head = ['paper row', 'dataset', 'config', f'paper {metric}', f'ours {metric}',
            'ours - paper', 'source']
    body = []
    for r in table['rows']:
        keys = ('accuracy/top1', 'accuracy/top5')[:len(r['paper'])]
        found = read_accuracy(runs[r['config']]) if r['config'] in runs else None
        ours: List[Optional[float]] = [None] * len(keys)
        if found:
            ours = [100.0 - found[0][k] if isinstance(found[0].get(k), (int, float)) else None
                    for k in keys]
        source = found[1] if found else (
            f'{runs[r["config"]]}: no accuracy/top1 logged' if r['config'] in runs
            else _no_run(runs, r['config']))
        body.append([
            r['row'], r['dataset'], r['config'], ' / '.join(_num(p) for p in r['paper']),
            ' / '.join(MISSING if o is None else _num(o) for o in ours),
            ' / '.join(_diff(o, p) for o, p in zip(ours, r['paper'])), source])
    return markdown(head, body)


def table8(runs: Dict[str, str]) -> str:
    cols = ' / '.join(c for c, _ in COCO_COLUMNS)
    head = ['paper row', 'config', f'paper {cols}', f'ours {cols}', 'ours - paper', 'source']
    body = []
    for name, paper in PAPER_TABLE8.items():
        config = next((c for c in TABLE8_CONFIGS[name] if c in runs), TABLE8_CONFIGS[name][0])
        ours = None
        source = next((n for c in TABLE8_CONFIGS[name] if (n := _no_run(runs, c, ''))),
                      'no run')
        if config in runs:
            try:
                metrics, src = read_metrics(runs[config])
                ours = tuple(100 * metrics[k] for _, k in COCO_COLUMNS)
                source = osp.relpath(src, osp.dirname(osp.normpath(runs[config])))
            except FileNotFoundError:
                source = f'{runs[config]}: no COCO bbox metrics logged'
        body.append([
            name, config, ' / '.join(_num(p, '.1f') for p in paper),
            MISSING if ours is None else ' / '.join(_num(o, '.1f') for o in ours),
            '-' if ours is None else ' / '.join(_diff(o, p, '+.1f') for o, p in zip(ours, paper)),
            source])
    return markdown(head, body)


def _benchmark_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        '_mmdsnet_benchmark', osp.join(osp.dirname(osp.abspath(__file__)), 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table9(bench_files: Sequence[str]) -> str:
    """Ratios of memory and time per iteration, ours (per JSON) beside the paper's. Ours divide by
    the best stock ResNet50 of the run (benchmark.py's references, named in "source"); a JSON
    without stock baselines (written before they were measured) divides by its ``ResNet50``
    row."""
    bench = _benchmark_module()
    paper = bench.PAPER
    head = ['paper row', 'model (run)', "paper MB (x R50)", 'ours MB (x ref)', 'ours - paper x',
            "paper s/it (x R50)", 'ours s/it (x ref)', 'ours - paper x', 'source']
    results = []
    for f in bench_files:
        with open(f) as fh:
            res = json.load(fh)
        if not isinstance(res.get('models'), dict):
            raise ValueError(f'{f}: not a benchmark.py --out JSON (no "models")')
        results.append((f, res))
    body = []
    for name, (p_mb, p_s) in paper.items():
        p_mb_x, p_s_x = p_mb / paper['ResNet50'][0], p_s / paper['ResNet50'][1]
        rows = []
        for f, res in results:
            key = res.get('memory_measure', 'peak_growth_mb')
            models = res['models']
            refs = bench.references(res, key)
            ref_time, ref_mem = refs['time'] or 'ResNet50', refs['memory'] or 'ResNet50'
            m = models.get(name)
            if m is None or 'missing' in m:
                continue
            mb = (m.get('memory') or {}).get(key)
            s = (m.get('train_time') or {}).get('median')
            b_mb = (models.get(ref_mem, {}).get('memory') or {}).get(key)
            b_s = (models.get(ref_time, {}).get('train_time') or {}).get('median')
            mb_x = mb / b_mb if mb is not None and b_mb else None
            s_x = s / b_s if s is not None and b_s else None
            device = (res.get('machine') or {}).get('device', '?')
            rows.append([
                name, name, f'{p_mb} ({p_mb_x:.2f})',
                MISSING if mb is None else f'{mb:.0f} ({_num(mb_x)})', _diff(mb_x, p_mb_x),
                f'{p_s:.2f} ({p_s_x:.2f})',
                MISSING if s is None else f'{s:.3f} ({_num(s_x)})', _diff(s_x, p_s_x),
                f'{f} ({device}, {key}, {res.get("date", "no date")}; ref: memory {ref_mem}, '
                f'time {ref_time})'])
        body += rows or [[name, '-', f'{p_mb} ({p_mb_x:.2f})', MISSING, '-',
                          f'{p_s:.2f} ({p_s_x:.2f})', MISSING, '-', 'no benchmark JSON'
                          if not results else 'not in the benchmark JSON']]
    return markdown(head, body)


def build_report(paths: Sequence[str], bench_files: Sequence[str] = (),
                 tables: Optional[Sequence[int]] = None, zoo: str = ZOO) -> str:
    runs = index_work_dirs(paths)
    wanted = set(tables or range(1, 10))
    out = []
    for t in parse_zoo(zoo):
        shown = [n for n in t['tables'] if n != 9]  # Table 9's columns come from benchmark.py
        if not wanted & set(shown):
            continue
        label = 'Table' if len(shown) == 1 else 'Tables'
        out += [f'### {label} {", ".join(map(str, shown))}: {t["title"]}', '',
                classification_table(t, runs), '']
    if 8 in wanted:
        out += ['### Table 8: COCO 2014 detection, Faster R-CNN + FPN (mAP %, paper: val2014)', '',
                table8(runs), '']
    if 9 in wanted:
        out += ['### Table 9: training memory and time per iteration, as ratios to ResNet50 '
                "(paper: four 1080Ti GPUs, batch 32 per GPU)", '', table9(bench_files), '']
    unused = sorted(set(runs) - {r['config'] for t in parse_zoo(zoo) for r in t['rows']}
                    - {c for cs in TABLE8_CONFIGS.values() for c in cs})
    if unused:
        out.append(f'Work dirs of configs in no paper table: {", ".join(unused)}')
    out += looked_at(runs)
    head = ('Paper columns: the numbers printed in Zhang et al., WACV 2021 (not measured here). '
            'Ours: measured by the runs named in "source"; "missing": no run or no metric.')
    return '\n'.join([head, ''] + out).rstrip() + '\n'


def looked_at(runs: WorkDirs) -> List[str]:
    """Lines saying which folders were searched and why some did not count (empty when every
    folder given held work dirs and nothing was skipped)."""
    lines = []
    if runs.roots and not len(runs):
        lines.append(f'No work dir found in {", ".join(runs.roots)} (searched {MAX_DEPTH} '
                     f'folders deep; a work dir holds a <timestamp>/ folder with the run\'s '
                     f'.log or a .json of metrics, and usually the config copy MMEngine '
                     f'writes beside it).')
    if runs.not_runs:
        lines.append('Folders that look like runs but are not work dirs:')
        lines += [f'- {d}: {why}' for d, why in list(runs.not_runs.items())[:20]]
        if len(runs.not_runs) > 20:
            lines.append(f'- ... and {len(runs.not_runs) - 20} more')
    if runs.too_deep:
        lines.append(f'Not searched below {MAX_DEPTH} levels: {", ".join(runs.too_deep[:5])}'
                     + (' ...' if len(runs.too_deep) > 5 else '') + ' (pass those folders)')
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('work_dirs', nargs='*', metavar='WORK_DIR',
                   help='work dirs, or folders of work dirs (e.g. work_dirs/)')
    p.add_argument('--benchmark', nargs='+', default=[], metavar='JSON',
                   help='benchmark.py --out files for Table 9')
    p.add_argument('--tables', nargs='+', type=int, choices=range(1, 10), metavar='N',
                   help='only these tables (1-9; default: all)')
    p.add_argument('--zoo', default=ZOO, help='the model zoo page to fill (default: '
                   'docs/model_zoo.md)')
    p.add_argument('--out', help='also write the markdown here')
    args = p.parse_args(argv)
    try:
        report = build_report(args.work_dirs, args.benchmark, args.tables, args.zoo)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(report, end='')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(report)
    if args.work_dirs and not len(index_work_dirs(args.work_dirs)):
        print(f'error: no work dir found in {", ".join(args.work_dirs)}: every "ours" reads '
              f'missing (see the end of the report for what was looked at)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
