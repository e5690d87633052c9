"""Where runs are: work dirs found below the folders given (``paper_table.py``'s search).

A work dir is what an MMEngine run leaves: a ``<timestamp>/`` folder with its ``.log`` or a
``.json`` of metrics, and usually beside it the config copy MMEngine writes. It belongs to the
config whose copy is in it, else to the config named like the dir.
"""
import glob
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

from mmdsnet.evaluation import read_json_records

#: How deep below each given folder work dirs are looked for.
MAX_DEPTH = 4
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


def _log_dirs(path: str) -> Tuple[List[str], List[str]]:
    """``(<timestamp>/ folders, those holding a log or metrics)`` of ``path``: MMEngine writes
    ``<timestamp>/<timestamp>.log`` (and ``vis_data/scalars.json``) when a run starts,
    ``tools/test.py`` ``<timestamp>/<timestamp>.json``."""
    stamps = sorted(d for d in _subdirs(path) if _TIMESTAMP.match(osp.basename(d)))
    logged = [d for d in stamps if glob.glob(osp.join(d, '*.log')) or glob.glob(osp.join(
        d, '*.json')) or osp.isfile(osp.join(d, 'vis_data', 'scalars.json'))]
    return stamps, logged


def _subdirs(path: str) -> List[str]:
    try:
        return sorted(e.path for e in os.scandir(path)
                      if e.is_dir() and not e.name.startswith('.'))
    except OSError:
        return []


def _configs_at(path: str) -> List[str]:
    return sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(path, '*.py')))


def _is_work_dir(path: str) -> bool:
    """A Runner's work dir: a ``<timestamp>/`` folder with a log or metrics (the config copy
    MMEngine puts beside it names the config; without one, the dir's name does)."""
    return bool(_log_dirs(path)[1])


def config_of(work_dir: str) -> str:
    configs = _configs_at(work_dir)
    if len(configs) == 1:
        return configs[0]
    return osp.basename(osp.normpath(work_dir))


def _why_not(path: str) -> Optional[str]:
    """Why a folder that looks like a run is not a work dir (None: it does not look like one)."""
    stamps, _ = _log_dirs(path)
    configs = _configs_at(path)
    if stamps:
        return (f'its {len(stamps)} <timestamp>/ folder(s) hold no .log or .json (the run '
                f'stopped before it logged anything)')
    if configs:
        return (f'holds {", ".join(c + ".py" for c in configs[:3])} but no <timestamp>/ folder '
                f'with a log or metrics beside it (a work dir has both; a folder of configs is '
                f'not one)')
    return None


class WorkDirs(dict):
    """``{config name: work dir}``, with what was looked at: ``not_runs`` (``{folder: why it is
    not a work dir}``, for folders that look like one) and ``too_deep`` (folders not searched
    below :data:`MAX_DEPTH`)."""

    def __init__(self):
        super().__init__()
        self.not_runs: Dict[str, str] = {}
        self.too_deep: List[str] = []
        self.roots: List[str] = []

    def note_for(self, config: str) -> Optional[str]:
        """Why no work dir of ``config`` was found, if a folder looked like one."""
        for folder, why in self.not_runs.items():
            if osp.basename(osp.normpath(folder)) == config or config in _configs_at(folder):
                return f'{folder}: not a work dir: {why}'
        return None


def index_work_dirs(paths: Sequence[str], max_depth: int = MAX_DEPTH) -> WorkDirs:
    """``{config name: work dir}`` for every work dir given or found below, up to ``max_depth``
    folders deep (a work dir's own sub-folders are not searched)."""
    found = WorkDirs()
    for path in paths:
        if not osp.isdir(path):
            raise FileNotFoundError(f'{path}: no such work dir or folder of work dirs')
        found.roots.append(path)
        todo = [(path, 0)]
        while todo:
            d, depth = todo.pop(0)
            if _is_work_dir(d):
                name = config_of(d)
                if name in found and osp.realpath(found[name]) != osp.realpath(d):
                    raise ValueError(f'two work dirs for config {name}: {found[name]} and {d}; '
                                     f'pass the one to report')
                found[name] = d
                continue
            why = _why_not(d)
            if why:
                found.not_runs[d] = why
            subdirs = [s for s in _subdirs(d) if not _TIMESTAMP.match(osp.basename(s))]
            if depth >= max_depth:
                if subdirs:
                    found.too_deep.append(d)
                continue
            todo += [(s, depth + 1) for s in subdirs]
    return found


def read_accuracy(work_dir: str) -> Optional[Tuple[Dict[str, float], str]]:
    """The last ``accuracy/top1`` (and top5) record in the newest json log, with its source."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json'))
                   + glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')),
                   key=osp.getmtime)
    for f in reversed(files):
        recs = [r for r in read_json_records(f)
                if isinstance(r.get('accuracy/top1'), (int, float))]
        if recs:
            rec = recs[-1]
            src = osp.relpath(f, osp.dirname(osp.normpath(work_dir)))
            if isinstance(rec.get('step'), int):
                src += f' (step {rec["step"]})'
            return rec, src
    return None
