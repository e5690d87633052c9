# ResNeXt-29, 8x64d on CIFAR-100; paper row: Table 6.
# ResNeXt-29 8x64d baseline (3 stages of 3 bottlenecks, outputs 256/512/1024).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(depth=29, shortcut='identity', block_cfg=dict(groups=8, width_per_group=64)),
    head=dict(num_classes=100, in_channels=1024))
