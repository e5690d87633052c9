"""What tools/train.py and tools/test.py share: mmdet's / mmpretrain's command line, start-up."""
import contextlib
import os
import os.path as osp
import re
from typing import Any, Callable, Iterable, Iterator, Tuple

from mmengine.config import Config, DictAction

from .dist import LAUNCHERS


def add_common_args(parser, cfg_options_example: str) -> None:
    """``--data-root``, ``--cfg-options``, ``--launcher``, both spellings of ``--local-rank``."""
    parser.add_argument(
        '--data-root',
        metavar='DIR',
        help='read the data from DIR: sets every dataloader\'s data_root, and the ann_file of '
        'the evaluators that read the same annotation file (COCO\'s CocoMetric)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override settings of the config, e.g. {cfg_options_example}; a list value is '
        f'key="[a,b]" (quotes needed, no spaces)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2.0) or --local_rank (older).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse(parser, argv=None):
    """Parse ``argv``; the local rank reaches MMEngine through ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_cfg(args) -> Config:
    """The config with the command line applied; work_dir: option > config > work_dirs/NAME.

    ``--data-root`` applies before ``--cfg-options``, so an option can still move one path.
    """
    from mmdsnet.datasets.checks import set_data_root
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.data_root is not None:
        set_data_root(cfg, args.data_root)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


@contextlib.contextmanager
def explained_errors() -> Iterator[None]:
    """Errors whose message names the problem and the fix end the tool as one ``error:`` line."""
    from . import user_errors
    try:
        yield
    except user_errors() as e:
        raise SystemExit(f'error: {e}') from None
    except AssertionError as e:
        unreadable = _UNREADABLE.search(str(e))
        if unreadable is None:
            raise
        raise SystemExit(unreadable_image_message(unreadable.group(1))) from None


# mmcv's LoadImageFromFile on an image it cannot decode (also re-raised from a loader worker)
_UNREADABLE = re.compile(r'failed to load image: (\S+)')


def unreadable_image_message(path: str) -> str:
    """An image became unreadable after the pre-run check (or was not in its sample)."""
    return (f'error: image {path} cannot be read (mmcv\'s LoadImageFromFile could not decode '
            f'it). Validation and test stop here rather than skip it (the metric would '
            f'silently count fewer images). Replace it with a good copy, or remove it (and its '
            f'line in the annotation list); then a training run continues from its last '
            f'checkpoint with --resume (the pre-run check reads every validation image first; '
            f'MMDSNET_IMAGE_CHECK=full also reads every training image).')


def build_runner(cfg: Config, launcher: str, splits: Iterable[str]) -> Tuple[Config, object]:
    """Prepare (and check) the config, check the datasets ``splits`` read, and build MMEngine's
    Runner.

    Checkpoints load under torch>=2.6 (the run's own work_dir is trusted in case one needs full
    unpickling); a config that cannot build or a missing dataset stops the run before anything
    is built.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmdsnet.compat import patch_torch_load
    from mmdsnet.datasets.checks import check_datasets

    from . import prepare_cfg
    patch_torch_load(trusted_dirs=[cfg.work_dir])
    cfg = prepare_cfg(cfg, launcher)
    check_datasets(cfg, splits)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    return cfg, runner


def run_job(cfg: Config, launcher: str, splits: Iterable[str],
            job: Callable[[Any], Any]) -> Tuple[Config, int, Any]:
    """Build the Runner (:func:`build_runner`), run ``job(runner)`` and return ``(cfg, rank,
    what job returned)``, the Runner freed and the process group destroyed.

    MMEngine destroys neither. A gloo process that still holds its process group when Python
    shuts down can abort there ("terminate called without an active exception", SIGABRT) after
    a finished run: the group's worker threads exit while the interpreter is finalizing
    (pytorch/pytorch#190489, #179291; 5 of 57 two-process CPU runs here, docs/robustness.md).
    The DDP wrapper keeps the group alive, so the Runner goes first. Not on an error: the other
    processes may still be inside a collective, and the error is what the user needs to see.
    """
    with explained_errors():
        cfg, runner = build_runner(cfg, launcher, splits)
        result = job(runner)
    rank = runner.rank
    del runner
    release_process_group()
    return cfg, rank, result


def release_process_group() -> None:
    """Free what still references the default process group (reference cycles), then destroy it."""
    import gc

    import torch.distributed as dist
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
