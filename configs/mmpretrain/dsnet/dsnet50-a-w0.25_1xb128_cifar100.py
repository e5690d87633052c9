# DSNet50-a (GN + weight) (0.25x) on CIFAR-100; paper row: Table 1 (ablation).
# DSNet-a (Fig. 3a, Eq. 11): the dense sources are the block outputs X_i (X_0 := Y_0).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut='dense_x'),
    head=dict(num_classes=100, in_channels=512))
