"""Evaluation helpers shared by the tools (no mmdet import); the JSON dump metric is
``mmdsnet.evaluation.dump_results`` (imported by tools/test.py --out F.json)."""
from .coco_table import (COLUMNS, PAPER_TABLE8, build_rows, format_table, is_coco2014,
                         read_json_records, read_metrics, table8_view)

__all__ = ['COLUMNS', 'PAPER_TABLE8', 'build_rows', 'format_table', 'is_coco2014',
           'read_json_records', 'read_metrics', 'table8_view']
