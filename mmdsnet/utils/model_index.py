"""Our configs in OpenMMLab's model index, for mmpretrain's ``get_model`` / ``list_models``.

``model-index.yml`` (at the top of the source tree) imports one ``metafile.yml`` per config
family, in OpenMMLab's format (what mim and mmpretrain read): name, config, paper, the paper's
tables and rows, parameters and FLOPs, the paper's results (labelled as the paper's) and weights
(empty until a checkpoint is published). mmpretrain's ``ModelHub`` reads only mmpretrain's own
index; :func:`register_model_index` adds our classification entries to it (the way OpenMMLab
plugin projects do). ``import mmdsnet`` (what ``custom_imports`` does) arranges for that to
happen on mmpretrain's first lookup (:func:`install_lazy_registration`), so after it mmpretrain
finds them by name::

    import mmdsnet
    import mmpretrain

    mmpretrain.list_models('*dsnet*')          # ['ds2net101-w0.25_1xb128_cifar10', ...]
    model = mmpretrain.get_model('dsnet50_4xb32_in1k', pretrained=False)

``import mmdsnet`` itself never imports mmpretrain and reads no YAML: the index is read on the
first ``list_models`` / ``get_model`` / inferencer lookup. No checkpoint is published yet, so
``get_model(name, pretrained=True)`` stops with a message saying so and how to train one.

A mim-search-style listing of every entry (detection included), with no mmpretrain needed::

    python -m mmdsnet.utils.model_index '*dsnet50*'

It needs the source tree (configs/ and model-index.yml beside the package: ``pip install -e .``).
mmpretrain is imported only by :func:`register_model_index`.
"""
import argparse
import fnmatch
import functools
import importlib.abc
import inspect
import os.path as osp
import sys
import warnings
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_INDEX = osp.join(ROOT, 'model-index.yml')


def _load_yaml(path: str) -> dict:
    import yaml
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: the model index ships with the source tree (configs/ and '
            f'model-index.yml); install mmdsnet from a checkout with pip install -e .')
    with open(path) as f:
        return yaml.safe_load(f) or {}


def metafiles(index: str = MODEL_INDEX) -> List[str]:
    """The metafiles ``index`` imports, as absolute paths."""
    root = osp.dirname(osp.abspath(index))
    return [osp.join(root, p) for p in _load_yaml(index).get('Import', [])]


def entries(index: str = MODEL_INDEX) -> List[dict]:
    """Every model entry of every metafile (the raw YAML dicts, with ``Metafile`` added)."""
    out = []
    for path in metafiles(index):
        for model in _load_yaml(path).get('Models', []):
            out.append(dict(model, Metafile=path))
    return out


def is_classification(entry: dict) -> bool:
    return entry['Config'].startswith('configs/mmpretrain/')


def register_model_index(index: str = MODEL_INDEX) -> List[str]:
    """Add our classification entries to mmpretrain's ``ModelHub`` (once; later calls do nothing).

    Returns:
        list[str]: The names mmpretrain now knows from us.

    Raises:
        ValueError: one of our names is already an mmpretrain model.
    """
    from mmpretrain.apis import ModelHub

    # mmpretrain registers its own index lazily; do it first so that a clash shows here.
    ModelHub._register_mmpretrain_models()
    names = []
    root = osp.dirname(osp.abspath(index))
    for path in metafiles(index):
        models = [m for m in _load_yaml(path).get('Models', [])
                  if m['Config'].startswith('configs/mmpretrain/')]
        if not models:
            continue  # detection: mmdet builds those from their configs
        family = [m['Name'].lower() for m in models]
        if not all(ModelHub.has(n) and _ours(ModelHub._models_dict[n], root) for n in family):
            clash = [n for n in family if ModelHub.has(n) and not _ours(ModelHub._models_dict[n],
                                                                      root)]
            if clash:
                raise ValueError(f'{path}: {", ".join(clash)} already name mmpretrain models')
            ModelHub.register_model_index(path, config_prefix=root)
        names += family
    return names


class NoPublishedCheckpointError(ValueError):
    """``get_model(<our name>, pretrained=True)``: no checkpoint of ours is published."""


def no_checkpoint_message(name: str) -> str:
    config = next((m['Config'] for m in entries() if m['Name'].lower() == name.lower()),
                  f'configs/mmpretrain/.../{name}.py')
    return (f'{name}: no checkpoint is published for mmdsnet\'s models yet ("Weights: null" in '
            f'its metafile), so pretrained=True has nothing to load. Train one with '
            f'`python tools/train.py {config}` (docs/classification.md), then load it with '
            f'get_model({name!r}, pretrained="work_dirs/{name}/<checkpoint>.pth"); '
            f'pretrained=False builds the model with random weights.')


def _patch_model_hub(module) -> None:
    """Make ``module`` (``mmpretrain.apis.model``) know our models on its first lookup, and
    refuse ``pretrained=True`` for them with :func:`no_checkpoint_message`."""
    hub = module.ModelHub
    if getattr(hub, '_mmdsnet_lazy', False):
        return
    original = hub._register_mmpretrain_models  # bound classmethod: mmpretrain's own index
    state = dict(done=False, busy=False, ours=set())

    def register(cls) -> None:
        original()
        if state['done'] or state['busy']:
            return
        state['busy'] = True  # register_model_index() calls this again
        try:
            state['ours'] = set(register_model_index())
        except Exception as e:  # a lookup of mmpretrain's own models must still work
            warnings.warn(f'mmdsnet: could not add its models to mmpretrain\'s index: {e}')
        finally:
            state['busy'] = False
            state['done'] = True

    hub._register_mmpretrain_models = classmethod(register)
    hub._mmdsnet_lazy = True
    get_model = module.get_model
    signature = inspect.signature(get_model)

    @functools.wraps(get_model)
    def get_model_or_explain(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        name = next(iter(bound.values()), None)  # the first parameter: the model's name
        if bound.get('pretrained') is True and isinstance(name, str):
            hub._register_mmpretrain_models()
            if name.lower() in state['ours']:
                raise NoPublishedCheckpointError(no_checkpoint_message(name))
        return get_model(*args, **kwargs)

    # mmpretrain.apis, mmpretrain and the inferencers' base re-export get_model: replace every
    # copy already made (after an import hook, this module is the only one yet)
    module.get_model = get_model_or_explain
    for name, mod in list(sys.modules.items()):
        if name.startswith('mmpretrain') and getattr(mod, 'get_model', None) is get_model:
            mod.get_model = get_model_or_explain


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``mmpretrain.apis.model`` right after it is executed, before ``mmpretrain.apis``
    re-exports its functions."""
    target = 'mmpretrain.apis.model'

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            try:
                _patch_model_hub(module)
            except Exception as e:  # mmpretrain changed: leave it as it is
                warnings.warn(f'mmdsnet: could not hook into mmpretrain\'s ModelHub: {e}')

        spec.loader.exec_module = exec_and_patch
        return spec


def install_lazy_registration() -> None:
    """Have mmpretrain's ``ModelHub`` register our entries on its first lookup (``import
    mmdsnet`` calls this; it imports nothing). Works whether mmpretrain is imported before or
    after mmdsnet."""
    module = sys.modules.get(_PatchOnImport.target)
    if module is not None:
        _patch_model_hub(module)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _ours(metainfo, root: str) -> bool:
    config = metainfo.config if isinstance(metainfo.config, str) else ''
    return osp.abspath(config).startswith(osp.join(root, 'configs') + osp.sep)


def format_entries(models: List[dict]) -> str:
    """A table: name, task, dataset, params, FLOPs, the paper's results, weights, config."""
    rows = [('name', 'task / dataset', 'params (M)', 'GFLOPs', "paper's results", 'weights',
             'config')]
    for m in models:
        meta = m.get('Metadata') or {}
        res = (m.get('Results') or [{}])[0]
        metrics = ', '.join(f'{k} {v}' for k, v in (res.get('Metrics') or {}).items()) or '-'
        flops = meta.get('FLOPs')
        rows.append((m['Name'], f'{res.get("Task", "-")} / {res.get("Dataset", "-")}',
                     f'{meta["Parameters"] / 1e6:.2f}' if meta.get('Parameters') else '-',
                     f'{flops / 1e9:.3f}' if flops else '-', metrics,
                     m.get('Weights') or '-', m['Config']))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description='List mmdsnet\'s model index (mim search style)')
    p.add_argument('pattern', nargs='?', default='*',
                   help='wildcard on the model name, e.g. "*dsnet50*" (default: all)')
    args = p.parse_args(argv)
    try:
        models = [m for m in entries() if fnmatch.fnmatch(m['Name'].lower(),
                                                           args.pattern.lower())]
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if not models:
        print(f'no model matches {args.pattern!r}', file=sys.stderr)
        return 1
    print(format_entries(models))
    return 0


__all__ = ['register_model_index', 'install_lazy_registration', 'entries', 'metafiles',
           'MODEL_INDEX', 'NoPublishedCheckpointError']

if __name__ == '__main__':
    sys.exit(main())
