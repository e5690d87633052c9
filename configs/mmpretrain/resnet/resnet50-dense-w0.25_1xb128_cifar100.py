# ResNet50-dense (0.25x) on CIFAR-100; paper row: Table 1 (ablation).
# ResNet-dense (Eq. 13): Y_l = act(X_l + sum of all earlier Y_i), no normalization, no weights.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(base_channels=16, shortcut='dense_identity'),
    head=dict(num_classes=100, in_channels=512))
