# ResNet50 (1x) on CIFAR-100; paper rows: Table 2, Table 4.
# ResNet baselines are DSNet(shortcut='identity'): mmpretrain's ResNet, same recipe.
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(shortcut='identity'),
    head=dict(num_classes=100, in_channels=2048))
