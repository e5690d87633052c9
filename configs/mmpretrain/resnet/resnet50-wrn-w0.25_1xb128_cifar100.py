# ResNet50 (WRN) (0.25x) on CIFAR-100; paper rows: Table 4.
# ResNet baselines are DSNet(shortcut='identity'): mmpretrain's ResNet, same recipe.
# "WRN" width: the bottleneck 3x3 conv is twice as wide (width_per_group=128).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut='identity', block_cfg=dict(width_per_group=128)),
    head=dict(num_classes=100, in_channels=512))
