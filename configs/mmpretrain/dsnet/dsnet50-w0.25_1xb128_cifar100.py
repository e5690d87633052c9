# DSNet50 (0.25x) on CIFAR-100; paper rows: Table 1, Table 2, Table 3, Table 4.
# Dense shortcuts: GN (32 groups, no affine) + channel-wise weights, structure (b).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16),
    head=dict(num_classes=100, in_channels=512))
