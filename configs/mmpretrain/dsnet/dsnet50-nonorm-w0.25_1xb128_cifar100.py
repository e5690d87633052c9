# DSNet50 (None + weight) (0.25x) on CIFAR-100; paper row: Table 1 (ablation).
# No normalization in the dense shortcuts (channel-wise weights kept).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut_norm_cfg=None),
    head=dict(num_classes=100, in_channels=512))
