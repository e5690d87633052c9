# DSNeXt-29, 8x64d on CIFAR-100; paper row: Table 6.
# DSNeXt-29 8x64d. The paper lists 34.4M parameters for its "6x64d" rows, which is the size
# of the 8x64d model (6x64d has 26.1M); this config is the 8x64d reading of that row.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(depth=29, block_cfg=dict(groups=8, width_per_group=64)),
    head=dict(num_classes=100, in_channels=1024))
