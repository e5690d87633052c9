# DSNet50 (LN + weight) (0.25x) on CIFAR-100; paper row: Table 1 (ablation).
# N = LayerNorm (GroupNorm with one group, no affine). The paper prints "0.2x": a typo for 0.25x.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut_norm_cfg='LN'),
    head=dict(num_classes=100, in_channels=512))
