# CIFAR-100 in mmpretrain's layout: data/cifar100/cifar-100-python/
# (docs/classification.md). The CIFAR-10 recipe (paper 4.1) with CIFAR-100's files and its
# training set's per-channel mean and std (mmpretrain's values, 0-255 scale).
_base_ = ['./cifar10_bs128.py']

dataset_type = 'CIFAR100'
data_root = 'data/cifar100'
data_preprocessor = dict(
    num_classes=100,
    mean=[129.304, 124.070, 112.434],
    std=[68.170, 65.392, 70.418])

train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
