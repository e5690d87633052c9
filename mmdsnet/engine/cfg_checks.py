"""Config mistakes caught before MMEngine turns them into a registry or shape traceback."""
from typing import Iterator, List, Tuple

OUR_TYPES = ('DSNet', 'DS2Net')
SCOPES = ('mmdet', 'mmpretrain')


class ConfigError(ValueError):
    """A config that cannot work, with the fix in its message."""


def iter_typed(node, key: str = '') -> Iterator[Tuple[str, dict]]:
    """``(key, dict)`` for every dict with a string ``type`` in a config tree, depth first; keys
    are spelled as ``--cfg-options`` takes them (``model.backbone``, ``model.neck.0``)."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield key, node
        for k, v in node.items():
            yield from iter_typed(v, f'{key}.{k}' if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from iter_typed(v, f'{key}.{i}')


def _backbone_out_channels(key: str, backbone: dict) -> Tuple[int, ...]:
    """``out_channels`` of one of our backbones, built on the meta device (no memory, no init)."""
    import torch

    from mmdsnet.registry import MODELS
    kwargs = {k: v for k, v in backbone.items() if k != 'type'}
    try:
        with torch.device('meta'):
            return MODELS.get(backbone['type'].rpartition('.')[2])(**kwargs).out_channels
    except (TypeError, ValueError) as e:  # a bad argument: say where it is
        raise ConfigError(f'{key}: {e}') from None


def check_channels(model: dict, key: str = 'model') -> None:
    """Raise :class:`ConfigError` when the neck (or, without one, the head) does not take the
    channels our backbone returns; both numbers and the fix are in the message."""
    backbone = model.get('backbone')
    if not isinstance(backbone, dict) or \
            str(backbone.get('type')).rpartition('.')[2] not in OUR_TYPES:
        return
    out = list(_backbone_out_channels(f'{key}.backbone', backbone))
    what = f'the backbone ({backbone["type"]}) returns {out} channels (its out_channels)'
    neck, head = model.get('neck'), model.get('head')
    neck = neck[0] if isinstance(neck, (list, tuple)) and neck else neck
    if isinstance(neck, dict) and 'in_channels' in neck:
        given = neck['in_channels']
        if (list(given) if isinstance(given, (list, tuple)) else [given]) != out:
            raise ConfigError(f'{key}.neck.in_channels={given} but {what}: set '
                              f'{key}.neck.in_channels={out}')
    elif isinstance(head, dict) and 'in_channels' in head:
        # a pooling neck (GlobalAveragePooling) or none: the head gets the last map's channels
        if head['in_channels'] != out[-1]:
            raise ConfigError(f'{key}.head.in_channels={head["in_channels"]} but {what}: set '
                              f'{key}.head.in_channels={out[-1]}')


def check_cfg(cfg) -> List[str]:
    """Raise :class:`ConfigError` for configs that cannot build; return warnings for risky ones."""
    warnings = []
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ConfigError(
            f'default_scope is {scope!r}: an mmdsnet config runs in mmdet or mmpretrain. Add '
            f"default_scope='mmpretrain' (classification) or default_scope='mmdet' (detection), "
            f"or inherit a base config that sets it.")
    uses_ours = False
    for key, node in iter_typed(cfg.get('model', {}), 'model'):
        prefix, _, name = node['type'].rpartition('.')
        if name in OUR_TYPES:
            uses_ours = True
            if prefix not in ('', 'mmdsnet'):
                raise ConfigError(
                    f"{key}.type={node['type']!r}: {name} is registered by mmdsnet, not by "
                    f"{prefix}. Write type='mmdsnet.{name}' (or type='{name}'), with "
                    f"custom_imports=dict(imports=['mmdsnet'], allow_failed_imports=False).")
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if uses_ours and not any(i == 'mmdsnet' or i.startswith('mmdsnet.') for i in imports):
        warnings.append(
            "the config uses DSNet but has no custom_imports=dict(imports=['mmdsnet'], "
            "allow_failed_imports=False): mmdsnet's tools import it anyway, but mmdet's and "
            "mmpretrain's own tools will fail with \"DSNet is not in the model registry\".")
    if isinstance(cfg.get('model'), dict):
        check_channels(cfg['model'])
    return warnings
