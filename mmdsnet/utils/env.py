"""What is installed, and whether it fits together (``python -m mmdsnet.utils.env``)."""
import importlib
import importlib.metadata as md
import sys
from typing import Dict, List, Tuple

# What MMEngine's collect_env does not report (it has PyTorch, TorchVision, OpenCV, MMEngine).
PACKAGES = ('mmcv', 'mmdet', 'mmpretrain', 'numpy', 'setuptools', 'pycocotools')


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return 'not installed'


def _vtuple(v: str) -> Tuple[int, ...]:
    out = []
    for part in v.split('+')[0].split('.')[:3]:
        digits = ''.join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def _mmcv_ops() -> str:
    try:
        importlib.import_module('mmcv._ext')
        return 'yes'
    except Exception as e:  # ImportError, or an ABI mismatch with the installed torch
        return f'no ({type(e).__name__}: {e})'


def check_env(versions: Dict[str, str]) -> List[str]:
    """Plain-words problems with an installed stack, empty when it fits together."""
    problems = []
    mmcv, mmdet = versions.get('mmcv', ''), versions.get('mmdet', '')
    if mmcv != 'not installed' and mmdet != 'not installed' and _vtuple(mmcv) >= (2, 2):
        problems.append(
            f'mmcv {mmcv} is too new for mmdet {mmdet}: mmdet 3.3 refuses to import unless '
            f'2.0.0rc4 <= mmcv < 2.2.0 (it asserts this when imported). Install mmcv 2.1.0 '
            f'with its ops: `bash tools/setup_env.sh` builds it against your torch.')
    if mmcv == 'not installed':
        problems.append('mmcv is not installed: run `bash tools/setup_env.sh`.')
    elif not versions.get('mmcv ops', '').startswith('yes'):
        problems.append(
            'mmcv has no compiled ops (mmcv-lite, or built under pip build isolation): '
            'classification works, detection (RoIAlign, NMS) does not. Rebuild with '
            '`bash tools/setup_env.sh`.')
    st = versions.get('setuptools', 'not installed')
    if st != 'not installed' and _vtuple(st) >= (82, ):
        problems.append(f'setuptools {st} removed pkg_resources, which mmengine 0.10.7 and '
                        f'mmcv 2.1.0 import: pip install "setuptools>=77.0.3,<81".')
    return problems


def collect_env(verbose: bool = False) -> Dict[str, str]:
    """MMEngine's ``collect_env`` (platform, Python, CUDA, compiler, PyTorch, OpenCV, MMEngine)
    plus what mmdsnet's stack needs on top: mmcv and whether its compiled ops load, mmdet,
    mmpretrain, numpy, setuptools, pycocotools, torch's thread count, mmdsnet.

    Args:
        verbose (bool): Also print the table and the problems :func:`check_env` finds
            (PyTorch's multi-line build details are left out of the print). Defaults to False.
    """
    import torch
    from mmengine.utils.dl_utils import collect_env as collect_base_env

    from mmdsnet import __version__
    info = dict(collect_base_env())
    for name in PACKAGES:
        info[name] = _version(name)
    if info['mmcv'] != 'not installed':
        info['mmcv ops'] = _mmcv_ops()
    info['torch threads'] = str(torch.get_num_threads())
    info['mmdsnet'] = __version__
    problems = check_env(info)
    if verbose:
        shown = {k: v for k, v in info.items() if '\n' not in str(v)}
        width = max(map(len, shown))
        for k, v in shown.items():
            print(f'{k:<{width}} : {v}')
        for p in problems:
            print(f'PROBLEM: {p}')
        if not problems:
            print('OK: the stack fits together')
    return info


if __name__ == '__main__':
    problems = check_env(collect_env(verbose=True))
    sys.exit(1 if problems else 0)
