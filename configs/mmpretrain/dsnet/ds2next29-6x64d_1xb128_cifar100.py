# DS2NeXt-29, 6x64d on CIFAR-100; paper row: Table 6.
# DS2NeXt-29 6x64d: DSNeXt-29 6x64d plus the DS2 inner shortcut around each 3x3 conv.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(type='mmdsnet.DS2Net', depth=29, block_cfg=dict(groups=6, width_per_group=64)),
    head=dict(num_classes=100, in_channels=1024))
