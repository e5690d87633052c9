# DSNet50 (GN + no weight) (0.25x) on CIFAR-100; paper row: Table 1 (ablation).
# No weights: every W is fixed to one (GN kept).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut_weight='none'),
    head=dict(num_classes=100, in_channels=512))
