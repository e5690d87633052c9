# DSWRN-28-10 on CIFAR-100; paper row: Table 6.
# DSWRN-28-10: WRN-28-10 with dense shortcuts. No DS2 form (basic blocks have no bottleneck 3x3).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(depth=28, block='basic', stem_channels=16, base_channels=160),
    head=dict(num_classes=100, in_channels=640))
