# DS2NeXt-29, 8x64d on CIFAR-100; paper row: Table 6.
# DS2NeXt-29 8x64d: the 8x64d reading of the paper's "DS2NeXt-29, 6x64d, 34.4M" row.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(type='mmdsnet.DS2Net', depth=29, block_cfg=dict(groups=8, width_per_group=64)),
    head=dict(num_classes=100, in_channels=1024))
