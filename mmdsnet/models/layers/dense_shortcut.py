"""The parts of the dense weighted normalized shortcut ``DS(Y_i) = W^i * N(Y_i)`` (paper Eq.
10-12): the weights ``W`` (:class:`DenseShortcut`), the parameter-free norms ``N`` and their
GroupNorm group rule. :class:`~mmdsnet.models.layers.DenseAggregation` puts them together."""
from typing import Optional, Union

import torch
from torch import nn

NORM_TYPES = ('GN', 'LN', 'IN', 'BN')
WEIGHT_TYPES = ('channel', 'none')
INIT_SCHEMES = ('uniform', 'last')
#: The initial ``W`` (docs/design.md, "The initial value of W": the learning check behind it).
#: ``shortcut_init=1.0`` gives the earlier default (every ``W`` at one).
DEFAULT_SHORTCUT_INIT = 'uniform'
DEFAULT_GN_GROUPS = 32
#: The activation after the dense sum (``shortcut_act``): none (``None`` / ``'none'``: Eq. 12 as
#: the paper prints it; DSNet fits faster without it) or ResNet's ReLU after its addition
#: (``'relu'``, the earlier default). See docs/design.md, "The activation after the dense sum".
ACT_TYPES = ('relu', 'none', None)
DEFAULT_SHORTCUT_ACT = None

NormCfg = Optional[Union[str, dict]]


def gn_groups(channels: int, num_groups: Optional[int] = None) -> int:
    """Group count of the shortcut GroupNorm on ``channels`` channels.

    Rule (ours; the paper only says GN): without an explicit ``num_groups``, the largest divisor of
    ``channels`` that is at most 32 and leaves at least 2 channels in every group. A group of one
    channel would silently turn GN into IN, which Table 1 measures as the worst shortcut norm.
    So: 32 groups from 64 channels up (every shortcut between stages of a 0.25x net and wider);
    16 on 32 channels and 8 on 16 (DS2's inner shortcuts of narrow nets); 26 on DS2Res2Net50's
    104-channel 26w x 4s group. An explicit ``num_groups`` is used as given and must divide
    ``channels`` at every shortcut of the network (``'IN'`` asks for one channel per group).
    """
    if num_groups is None:
        return max([g for g in range(1, min(DEFAULT_GN_GROUPS, channels // 2) + 1)
                    if channels % g == 0] or [1])
    if num_groups < 1 or channels % num_groups:
        divisors = [g for g in range(1, channels + 1) if channels % g == 0]
        raise ValueError(
            f'shortcut_norm_cfg: GroupNorm with num_groups={num_groups} cannot split '
            f'{channels} channels, a shortcut of this network at the chosen width. Use a '
            f'num_groups dividing every shortcut width (here one of {divisors}), or leave '
            f'num_groups out to pick the default rule per layer.')
    return num_groups


def act_is_relu(act) -> bool:
    """Whether ``shortcut_act`` asks for the ReLU after the dense sum; anything but
    :data:`ACT_TYPES` raises, naming them."""
    if not (act is None or isinstance(act, str)) or act not in ACT_TYPES:
        raise ValueError(f'shortcut_act must be one of {ACT_TYPES} (the activation after the '
                         f'dense sum: ResNet\'s ReLU, or none as Eq. 12 prints it), got {act!r}')
    return act == 'relu'


def init_values(init: Union[float, str], num_sources: int) -> torch.Tensor:
    """Initial ``W_l^i`` for ``i = 0 .. l-1`` (``l = num_sources``), see :class:`DenseShortcut`."""
    if isinstance(init, str):
        if init not in INIT_SCHEMES:
            raise ValueError(f'shortcut_init must be a number or one of {INIT_SCHEMES}, '
                             f'got {init!r}')
        if init == 'uniform':
            return torch.full((num_sources, ), 1.0 / num_sources)
        values = torch.zeros(num_sources)
        values[-1] = 1.0
        return values
    if isinstance(init, bool) or not isinstance(init, (int, float)):
        raise TypeError(f'shortcut_init must be a number or one of {INIT_SCHEMES}, '
                        f'got {init!r}')
    return torch.full((num_sources, ), float(init))


def build_shortcut_norm(cfg: NormCfg, channels: int) -> nn.Module:
    """Build ``N``: a parameter-free normalization (no affine, paper 3.3).

    Args:
        cfg (str | dict | None): ``'GN'`` (default; groups by :func:`gn_groups`),
            ``'LN'`` (GN with 1 group), ``'IN'`` (GN with C groups), ``'BN'`` (BatchNorm without
            affine; keeps running statistics), or ``None`` / ``'none'`` (no normalization).
            A dict is ``dict(type=..., **kwargs)``; GN takes ``num_groups`` and all take ``eps``.
            Any other type is built by mmcv's ``build_norm_layer`` from the norm registry
            (e.g. ``dict(type='SyncBN', affine=False)`` or a norm you registered); the dense
            aggregation then takes its reference form (see
            :class:`~mmdsnet.models.layers.DenseAggregation`).
        channels (int): Channels of the normalized feature.
    """
    norm_type, kwargs = check_shortcut_norm_cfg(cfg)
    if norm_type is None:
        return nn.Identity()
    if norm_type not in NORM_TYPES:
        return _build_registered_norm(norm_type, kwargs, channels)
    eps = kwargs.get('eps', 1e-5)
    if norm_type == 'GN':
        groups = gn_groups(channels, kwargs.get('num_groups'))
        return nn.GroupNorm(groups, channels, eps=eps, affine=False)
    if norm_type == 'LN':
        return nn.GroupNorm(1, channels, eps=eps, affine=False)
    if norm_type == 'IN':
        return nn.GroupNorm(channels, channels, eps=eps, affine=False)
    return nn.BatchNorm2d(channels, eps=eps, affine=False)


def check_shortcut_norm_cfg(cfg: NormCfg):
    """``(type, kwargs)`` of a shortcut norm config (type None: no normalization); an unknown
    type or key raises, naming the allowed ones."""
    if cfg is None:
        return None, {}
    cfg = dict(type=cfg) if isinstance(cfg, str) else dict(cfg)
    norm_type = cfg.pop('type', None)
    if norm_type in (None, 'none'):
        return None, {}
    if norm_type not in NORM_TYPES:
        import mmcv.cnn  # noqa: F401  (registers mmcv's norm types: SyncBN ...)
        from mmengine.registry import MODELS
        if not (isinstance(norm_type, type) or MODELS.get(norm_type) is not None):
            raise ValueError(f'shortcut_norm_cfg: unknown type {norm_type!r}; expected one of '
                             f'{NORM_TYPES}, None, or a norm type registered in MMEngine\'s '
                             f'MODELS (e.g. mmcv\'s \'SyncBN\')')
        return norm_type, cfg
    allowed = {'eps', 'num_groups'} if norm_type == 'GN' else {'eps'}
    if set(cfg) - allowed:
        raise TypeError(f'shortcut_norm_cfg: unexpected keys {sorted(set(cfg) - allowed)} for '
                        f'{norm_type!r}; allowed: {sorted(allowed)}')
    return norm_type, cfg


def _build_registered_norm(norm_type, kwargs: dict, channels: int) -> nn.Module:
    from mmcv.cnn import build_norm_layer
    return build_norm_layer(dict(type=norm_type, **kwargs), channels)[1]


class DenseShortcut(nn.Module):
    """``W_l``: the channel-wise weights ``W_l^i`` of the shortcuts into block ``l`` (Eq. 12).

    Only the weights, despite the name (kept: it is the module of the checkpoint keys
    ``...shortcuts.{j}.weight`` and of the public API): the norms ``N(Y_i)`` are computed once per
    source and shared by every later block, so they live in
    :class:`~mmdsnet.models.layers.DenseAggregation`'s ``norms``, which also does the arithmetic.
    One ``(num_sources, C, 1, 1)`` parameter (one checkpoint key per block), or no parameter for
    ``weight='none'`` (every weight fixed at 1; Table 1 "no weight").

    Args:
        channels (int): Channels of ``X_l`` and of every source.
        num_sources (int): Number of sources ``Y_0 .. Y_{l-1}``, i.e. ``l``.
        weight (str): ``'channel'`` (learnable, default) or ``'none'``.
        init (float | str): Initial value of ``W_l^i``: a number for every ``i``, or one of
            :data:`INIT_SCHEMES` (see docs/design.md for the experiments behind the default):
            ``'uniform'`` (the default) is ``1 / l`` for every ``i``, so that the weighted sum of
            ``l`` normalized sources keeps the scale of one; ``'last'`` is ``W_l^{l-1} = 1`` and
            0 for every earlier source, so that at initialization block ``l`` sees only its
            predecessor, as in ResNet but normalized. ``1.0`` was the earlier default.
    """

    def __init__(self, channels: int, num_sources: int, weight: str = 'channel',
                 init: Union[float, str] = DEFAULT_SHORTCUT_INIT) -> None:
        super().__init__()
        if weight not in WEIGHT_TYPES:
            raise ValueError(f'shortcut_weight must be one of {WEIGHT_TYPES}, got {weight!r}')
        self.channels, self.num_sources = channels, num_sources
        values = init_values(init, num_sources)
        if weight == 'channel':
            self.weight = nn.Parameter(
                values.reshape(num_sources, 1, 1, 1).repeat(1, channels, 1, 1))
        else:
            self.register_parameter('weight', None)

    def extra_repr(self) -> str:
        weight = 'none' if self.weight is None else 'channel'
        return f'channels={self.channels}, num_sources={self.num_sources}, weight={weight}'
