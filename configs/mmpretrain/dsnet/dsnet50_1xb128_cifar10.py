# DSNet50 (1x) on CIFAR-10; paper rows: Table 2.
# Dense shortcuts: GN (32 groups, no affine) + channel-wise weights, structure (b).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(),
    head=dict(num_classes=10, in_channels=2048))
