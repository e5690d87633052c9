"""Put several detection runs' COCO metrics side by side with the paper's Table 8.

    python tools/analysis/coco_table.py work_dirs/faster_rcnn_r50_coco \\
        work_dirs/faster_rcnn_dsnet50_coco work_dirs/faster_rcnn_ds2net50_coco
    python tools/analysis/coco_table.py work_dirs/demo --names "demo DS2Net-26 0.25x" --no-paper

Each argument is a work dir or a json file. In a work dir, the newest MMEngine json log holding
CocoMetric results is used: ``<timestamp>/vis_data/<timestamp>.json`` (one line per validation,
written while training; the last one is taken) or ``<timestamp>/<timestamp>.json`` (what
``tools/test.py`` writes). A json file may also be one of those, a plain dict of metrics, or the
demo's ``demo_results.json`` (its ``trained`` entry). Numbers are printed in percent, in the
paper's three columns; the paper's rows are labelled as the paper's.
"""
import argparse
import os
import os.path as osp
import sys

from mmdsnet.evaluation import build_rows, format_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='*', help='work dirs or json files')
    p.add_argument('--names', nargs='+', help='one display name per run (default: dir name)')
    p.add_argument('--no-paper', action='store_true', help='leave out the paper\'s rows')
    p.add_argument('--out', help='also write the table (markdown) to this file')
    args = p.parse_args(argv)
    try:
        table = format_table(build_rows(args.runs, args.names, not args.no_paper))
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
