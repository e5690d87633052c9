# DSNeXt-29, 6x64d on CIFAR-100; paper row: Table 6.
# DSNeXt-29 6x64d: ResNeXt-29 6x64d with dense shortcuts (26.1M parameters; the paper
# lists 34.4M, the size of 8x64d: see dsnext29-8x64d_1xb128_cifar100.py).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(depth=29, block_cfg=dict(groups=6, width_per_group=64)),
    head=dict(num_classes=100, in_channels=1024))
