"""Config mistakes caught before MMEngine turns them into a registry traceback."""
from typing import List

OUR_TYPES = ('DSNet', 'DS2Net')
SCOPES = ('mmdet', 'mmpretrain')


class ConfigError(ValueError):
    """A config that cannot work, with the fix in its message."""


def _types(node, path='model') -> List[tuple]:
    found = []
    if isinstance(node, dict):
        t = node.get('type')
        if isinstance(t, str):
            found.append((path, t))
        for k, v in node.items():
            found += _types(v, f'{path}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _types(v, f'{path}[{i}]')
    return found


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
    for path, t in _types(cfg.get('model', {})):
        prefix, _, name = t.rpartition('.')
        if name in OUR_TYPES:
            uses_ours = True
            if prefix not in ('', 'mmdsnet'):
                raise ConfigError(
                    f"{path}.type={t!r}: {name} is registered by mmdsnet, not by {prefix}. "
                    f"Write type='{name}' or type='mmdsnet.{name}', with "
                    f"custom_imports=dict(imports=['mmdsnet'], allow_failed_imports=False).")
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if uses_ours and not any(i == 'mmdsnet' or i.startswith('mmdsnet.') for i in imports):
        warnings.append(
            "the config uses DSNet but has no custom_imports=dict(imports=['mmdsnet'], "
            "allow_failed_imports=False): mmdsnet's tools import it anyway, but mmdet's and "
            "mmpretrain's own tools will fail with \"DSNet is not in the model registry\".")
    return warnings
