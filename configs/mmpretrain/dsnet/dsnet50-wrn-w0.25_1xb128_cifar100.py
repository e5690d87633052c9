# DSNet50 (WRN) (0.25x) on CIFAR-100; paper rows: Table 4.
# Dense shortcuts: GN (32 groups, no affine) + channel-wise weights, structure (b).
# "WRN" width: the bottleneck 3x3 conv is twice as wide (width_per_group=128).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, block_cfg=dict(width_per_group=128)),
    head=dict(num_classes=100, in_channels=512))
