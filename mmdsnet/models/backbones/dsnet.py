"""DSNet / DS2Net backbones: ResNet with its identity shortcut replaced by dense shortcuts."""
import copy
import logging
from typing import Optional, Sequence, Tuple, Union

from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import register_model
from ..blocks import DSBasicBlock, DSBottle2neck, DSBottleneck
from ..layers import AGGREGATION_IMPLS, DenseAggregation, init_values
from ..layers.dense_shortcut import (DEFAULT_SHORTCUT_ACT, DEFAULT_SHORTCUT_INIT, WEIGHT_TYPES,
                                     act_is_relu, check_shortcut_norm_cfg)
from ..pretrained import ShortcutActMismatchError, pretrained_cfg, refuse_old_keys
from ..stage import SHORTCUT_MODES, DSLayer

# Kaiming for convs, ones for affine norms; the shortcut weights W are bare parameters that no
# layer-type init touches (their value is ``shortcut_init``).
DEFAULT_INIT_CFG = (
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
)
STEMS = ('imagenet', 'cifar')


def _refuse_old_keys(module, state_dict, prefix, *args) -> None:
    refuse_old_keys(k for k in state_dict if k.startswith(prefix))


def _record_shortcut_act(module, state_dict, prefix, local_metadata) -> None:
    local_metadata['shortcut_act'] = module.shortcut_act


@register_model
class DSNet(BaseModule):
    """DSNet backbone family (Zhang et al., "ResNet or DenseNet? Introducing Dense Shortcuts to
    ResNet", WACV 2021), one implementation for every variant the paper trains.

    Every stage is a :class:`DSLayer`; ``shortcut='identity'`` is exactly mmpretrain's /
    torchvision's ResNet (same keys, same outputs), so ResNet checkpoints load into it.

    Args:
        depth (int): Key of ``arch_settings[block]``: bottleneck 26, 29 (3 stages, ResNeXt-29),
            38, 50, 77, 101, 152; basic 18, 28 (3 stages, WRN-28), 34; bottle2neck 50, 101, 152.
        block (str): ``'bottleneck'``, ``'basic'`` or ``'bottle2neck'`` (Res2Net).
            Defaults to ``'bottleneck'``.
        block_cfg (dict, optional): Passed to every block: ``groups``/``width_per_group``
            (ResNeXt, wide), ``base_width``/``scales`` (Res2Net), ``inner_shortcut`` (DS2Net).
        shortcut (str): ``'dense'`` (DSNet, default), ``'dense_x'`` (DSNet-a),
            ``'dense_identity'`` (ResNet-dense, Eq. 13) or ``'identity'`` (ResNet).
        shortcut_norm_cfg (str | dict | None): ``N``: ``'GN'`` / ``dict(type='GN',
            num_groups=32)`` (default), ``'LN'``, ``'IN'``, ``'BN'`` (no affine) or None.
        shortcut_weight (str): ``'channel'`` (learnable ``W_l^i``, default) or ``'none'``.
        shortcut_init (float | str): Initial value of ``W``: ``'uniform'`` (``W_l^i = 1/l``,
            the default), ``'last'`` (``W_l^{l-1} = 1``, the rest 0) or a number for every
            ``W_l^i`` (``1.0``: the earlier default); see
            :class:`~mmdsnet.models.layers.DenseShortcut` and docs/design.md.
        shortcut_act (str | None): The activation after every dense sum (and DS2's inner one):
            None / ``'none'`` (default: Eq. 12 as the paper prints it; DS2's inner shortcut is
            then added after the bottleneck's own ReLU) or ``'relu'`` (ResNet's ReLU after its
            addition, the earlier default). Block 0 of each stage and
            ``shortcut='identity'`` keep ResNet's ReLU whatever it says. State dicts record it,
            and a model refuses weights trained with the other one
            (:class:`~mmdsnet.models.pretrained.ShortcutActMismatchError`). See docs/design.md.
        stem (str): ``'imagenet'`` (7x7/2 conv + 3x3/2 max pool) or ``'cifar'`` (3x3/1 conv).
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int, optional): Stem width; defaults to ``base_channels``.
        base_channels (int): Planes of stage 1; stage ``i`` has ``base_channels * 2**i`` planes
            times the block expansion. 64 is 1x width, 32 is 0.5x, 16 is 0.25x.
        out_indices (Sequence[int]): Stages whose outputs are returned, negative indices
            counting from the end. Defaults to ``(-1,)``, the last stage. Stages after the
            last returned one are not built (they would hold parameters DDP never sees used).
        frozen_stages (int): -1 freezes nothing, 0 the stem, ``k`` the stem and stages 1..k,
            their shortcut norms and weights included. Defaults to -1.
        conv_cfg (dict, optional): Conv layer config. Defaults to None (``nn.Conv2d``).
        norm_cfg (dict): Norm of the residual branches. Defaults to ``dict(type='BN')``.
        norm_eval (bool): Keep every BatchNorm (shortcut norms included) in eval mode while
            training. Defaults to False.
        with_cp (bool): Gradient checkpointing of the residual branches. Defaults to False.
        aggregation_impl (str): How every dense aggregation (and DS2 inner shortcut) computes:
            ``'op'`` (default: the custom operators, Triton kernels on CUDA, the least memory)
            or ``'reference'`` (norm modules + weighted sum: the same result, more memory, less
            CPU time per call; faster where the CPU bounds the step, e.g. batch 32 per GPU on an
            H200: docs/performance.md, "GPU"). Changes no parameter or checkpoint key.
        zero_init_residual (bool): Zero the last norm of each residual branch, skipped when
            ``init_cfg`` loads pretrained weights. Defaults to True.
        init_cfg (dict | list[dict], optional): Defaults to :data:`DEFAULT_INIT_CFG`.

    Example:
        >>> import torch
        >>> from mmdsnet.models import DSNet
        >>> m = DSNet(depth=50, base_channels=16, out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(f.shape) for f in m(torch.rand(1, 3, 64, 64))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    """

    block_types = {'basic': DSBasicBlock, 'bottleneck': DSBottleneck,
                   'bottle2neck': DSBottle2neck}
    arch_settings = {  # block -> depth -> blocks per stage
        'bottleneck': {26: (2, 2, 2, 2), 29: (3, 3, 3), 38: (3, 3, 3, 3), 50: (3, 4, 6, 3),
                       77: (3, 4, 15, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)},
        'basic': {18: (2, 2, 2, 2), 28: (4, 4, 4), 34: (3, 4, 6, 3)},
        'bottle2neck': {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)},
    }
    default_block_cfg: dict = {}
    #: State-dict version (torch's per-module ``_version``): 2 records ``shortcut_act`` in the
    #: metadata (:meth:`_load_from_state_dict`); 1 did not, and every DSNet then had the ReLU.
    _version = 2

    def __init__(self,
                 depth: int = 50,
                 block: str = 'bottleneck',
                 block_cfg: Optional[dict] = None,
                 shortcut: str = 'dense',
                 shortcut_norm_cfg: Union[str, dict, None] = 'GN',
                 shortcut_weight: str = 'channel',
                 shortcut_init: Union[float, str] = DEFAULT_SHORTCUT_INIT,
                 shortcut_act: Optional[str] = DEFAULT_SHORTCUT_ACT,
                 stem: str = 'imagenet',
                 in_channels: int = 3,
                 stem_channels: Optional[int] = None,
                 base_channels: int = 64,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 aggregation_impl: str = 'op',
                 zero_init_residual: bool = True,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=copy.deepcopy(list(DEFAULT_INIT_CFG))
                         if init_cfg is None else init_cfg)
        if block not in self.block_types:
            raise ValueError(f'block must be one of {sorted(self.block_types)}, got {block!r}')
        if depth not in self.arch_settings[block]:
            raise ValueError(f'depth={depth!r} is not available for block={block!r}; choose '
                             f'one of {sorted(self.arch_settings[block])}')
        if shortcut not in SHORTCUT_MODES:
            raise ValueError(f'shortcut must be one of {SHORTCUT_MODES}, got {shortcut!r}')
        if stem not in STEMS:
            raise ValueError(f'stem must be one of {STEMS}, got {stem!r}')
        if aggregation_impl not in AGGREGATION_IMPLS:
            raise ValueError(f'aggregation_impl must be one of {AGGREGATION_IMPLS}, got '
                             f'{aggregation_impl!r}')
        if base_channels < 1:
            raise ValueError(f'base_channels must be positive, got {base_channels}')
        stage_blocks = self.arch_settings[block][depth]
        self.num_stages = num_stages = len(stage_blocks)
        self.out_indices = self._check_out_indices(out_indices, num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}] (-1 freezes nothing, '
                             f'0 the stem, k the stem and k stages), got {frozen_stages}')
        self.depth, self.block, self.shortcut = depth, block, shortcut
        # 'relu' or 'none', recorded in every state dict (the activation has no parameter)
        self.shortcut_act = 'relu' if act_is_relu(shortcut_act) else 'none'
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self.zero_init_residual = zero_init_residual
        self.block_cfg = {**self.default_block_cfg, **(block_cfg or {})}
        self._act_matters = (shortcut != 'identity'
                             or bool(self.block_cfg.get('inner_shortcut', False)))
        block_cls = self.block_types[block]
        stem_channels = base_channels if stem_channels is None else stem_channels
        self._check_shortcut_args(shortcut, self.block_cfg.get('inner_shortcut', False),
                                  shortcut_norm_cfg, shortcut_weight, shortcut_init,
                                  shortcut_act)

        self._make_stem(stem, in_channels, stem_channels, conv_cfg, norm_cfg)
        self.res_layers, in_ch = [], stem_channels
        for i, n in enumerate(stage_blocks[:max(self.out_indices) + 1]):
            out_ch = base_channels * 2**i * block_cls.expansion
            try:
                blocks = [
                    block_cls(in_ch if j == 0 else out_ch, out_ch,
                              stride=(1 if i == 0 else 2) if j == 0 else 1,
                              conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                              shortcut_norm_cfg=shortcut_norm_cfg,
                              shortcut_weight=shortcut_weight, shortcut_init=shortcut_init,
                              shortcut_act=shortcut_act,
                              **(dict(first_block=j == 0) if block_cls.stage_aware else {}),
                              **self.block_cfg) for j in range(n)
                ]
            except TypeError as e:  # an unknown block_cfg key: name it and the block
                raise TypeError(f'block_cfg {self.block_cfg} does not fit block={block!r} '
                                f'({block_cls.__name__}): {e}') from None
            layer = DSLayer(blocks, shortcut, shortcut_norm_cfg, shortcut_weight, shortcut_init,
                            with_cp, shortcut_act)
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
            in_ch = out_ch
        self.stage_channels: Tuple[int, ...] = tuple(
            base_channels * 2**i * block_cls.expansion for i in range(num_stages))
        for m in self.modules():  # chosen once, here (nothing picks it process-wide)
            if isinstance(m, DenseAggregation):
                m.impl = aggregation_impl
        # Every load (torch's, MMEngine's load_checkpoint and --resume) passes here: a checkpoint
        # with the old dense-shortcut keys stops with the conversion command, not missing keys.
        self.register_load_state_dict_pre_hook(_refuse_old_keys)
        self._register_state_dict_hook(_record_shortcut_act)
        self._freeze_stages()
        self._log_shortcut_norms()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        """Refuse weights trained with the other ``shortcut_act``: it has no parameter, so they
        would load without a missing key and compute something else.

        The activation comes from the checkpoint's metadata (torch and MMEngine save it beside
        the tensors); metadata of version 1 means the ReLU, the only activation then. Checked
        where both sides have dense shortcuts (a ResNet checkpoint, or a state dict without
        metadata, has nothing to say).
        """
        has_dense = any(k.startswith(prefix) and 'aggregation.' in k for k in state_dict)
        if local_metadata and has_dense and self._act_matters:
            trained = local_metadata.get('shortcut_act', 'relu')
            if trained != self.shortcut_act:
                trained_arg, ours = (repr(a if a == 'relu' else None)
                                     for a in (trained, self.shortcut_act))
                raise ShortcutActMismatchError(
                    f'These {type(self).__name__} weights were trained with shortcut_act='
                    f'{trained_arg}, but this model has shortcut_act={ours}: the same tensors '
                    f'would compute something else. Build the backbone with shortcut_act='
                    f'{trained_arg} (on the command line: --cfg-options '
                    f'model.backbone.shortcut_act={trained_arg.strip(chr(39))}).')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    @staticmethod
    def _check_shortcut_args(shortcut, inner_shortcut, norm_cfg, weight, init, act) -> None:
        """Validate the shortcut arguments in every mode, and warn (once per process) about those
        the mode ignores: identity and ResNet-dense have neither ``N`` nor ``W`` (unless DS2's
        inner shortcuts use them)."""
        check_shortcut_norm_cfg(norm_cfg)  # unknown type or key: the error names the choices
        if weight not in WEIGHT_TYPES:
            raise ValueError(f'shortcut_weight must be one of {WEIGHT_TYPES}, got {weight!r}')
        init_values(init, 1)
        act_is_relu(act)  # an unknown activation: the error names the choices
        if shortcut in ('identity', 'dense_identity') and not inner_shortcut:
            ignored = [('shortcut_norm_cfg', norm_cfg, 'GN'),
                       ('shortcut_weight', weight, 'channel'),
                       ('shortcut_init', init, DEFAULT_SHORTCUT_INIT)]
            if shortcut == 'identity':  # ResNet-dense's plain sum takes shortcut_act
                ignored.append(('shortcut_act', 'relu' if act_is_relu(act) else None,
                                DEFAULT_SHORTCUT_ACT))
            given = {k: v for k, v, default in ignored if v != default}
            if given:
                print_log(f'DSNet(shortcut={shortcut!r}) has no weighted normalized shortcuts, '
                          f'so {given} has no effect', logger='current', level=logging.WARNING)

    def _log_shortcut_norms(self) -> None:
        """Which ``N`` each shortcut got (debug level): GN group counts follow a width rule."""
        for name, m in self.named_modules():
            if isinstance(m, DenseAggregation) and len(m.norms):
                print_log(f'{name}: N = {m.norms[0]!r} on {m.num_sources} source(s)',
                          logger='current', level=logging.DEBUG)

    @staticmethod
    def _check_out_indices(out_indices, num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        result = []
        for i in out_indices:
            if not isinstance(i, int) or not -num_stages <= i < num_stages:
                raise ValueError(f'out_indices {tuple(out_indices)}: {i!r} is out of range for '
                                 f'{num_stages} stages; use values in [0, {num_stages - 1}] '
                                 f'(or negative from the end)')
            result.append(i % num_stages)
        if len(set(result)) != len(result):
            raise ValueError(f'out_indices {tuple(out_indices)} repeats a stage')
        return tuple(result)

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each returned feature map, in ``out_indices`` order (for necks)."""
        return tuple(self.stage_channels[i] for i in self.out_indices)

    def _make_stem(self, stem, in_channels, stem_channels, conv_cfg, norm_cfg) -> None:
        # Names conv1 / bn1 / maxpool are mmpretrain's and torchvision's (checkpoint keys).
        if stem == 'imagenet':
            self.conv1 = build_conv_layer(conv_cfg, in_channels, stem_channels, 7, stride=2,
                                          padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = build_conv_layer(conv_cfg, in_channels, stem_channels, 3, stride=1,
                                          padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    def init_weights(self) -> None:
        """Initialise by ``init_cfg``, then zero each residual branch's last norm unless a
        checkpoint was loaded (mmpretrain's ResNet does the same).

        ``type='Pretrained'`` resolves in mmdsnet's scope to
        :class:`mmdsnet.models.pretrained.StrictPretrained`, not to MMEngine's silent
        ``strict=False`` load: it logs ``loaded N/M backbone tensors from FILE (prefix ...)`` and
        raises when under 90% of the tensors match. Without a ``Pretrained`` entry the backbone
        starts from scratch, and says so. A second call changes nothing.
        """
        first_call = not self.is_init
        with DefaultScope.overwrite_default_scope('mmdsnet'):
            super().init_weights()
        if not first_call or pretrained_cfg(self.init_cfg) is not None:
            return
        print_log(f'{type(self).__name__}: no Pretrained init_cfg, so the backbone starts from '
                  f'scratch (init_cfg={self.init_cfg})', logger='current')
        if self.zero_init_residual:
            for name in self.res_layers:
                layer = getattr(self, name)
                for l in range(layer.num_blocks):
                    layer.block(l).zero_init_last()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        outs = []
        for name in self.res_layers:
            x = getattr(self, name)(x)
            outs.append(x)
        return tuple(outs[i] for i in self.out_indices)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            frozen = [self.conv1, self.norm1]
            frozen += [getattr(self, name) for name in self.res_layers[:self.frozen_stages]]
            for m in frozen:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):  # shortcut BNs included
                    m.eval()
        return self


@register_model
class DS2Net(DSNet):
    """DS2Net: DSNet plus the weighted normalized shortcut around each stride-1 3x3 conv
    (paper 3.3), i.e. ``DSNet(block_cfg=dict(inner_shortcut=True))``."""

    default_block_cfg = dict(inner_shortcut=True)
