# ResNeXt50 32x4d (0.25x) on CIFAR-100; paper row: Table 5.
# ResNeXt bottleneck: 32 groups, 4 channels per group at 1x (scaled with the width).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(
        base_channels=16,
        shortcut='identity',
        block_cfg=dict(groups=32, width_per_group=4)),
    head=dict(num_classes=100, in_channels=512))
