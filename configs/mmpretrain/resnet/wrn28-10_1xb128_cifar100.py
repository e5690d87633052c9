# WRN-28-10 on CIFAR-100; paper row: Table 6.
# WRN-28-10 baseline (basic blocks, 3 stages of 4, widths 160/320/640), trained here by the
# paper's recipe. Post-activation blocks without dropout (Zagoruyko's WRN is pre-activation).
_base_ = [
    '../_base_/models/dsnet_cifar.py',
    '../_base_/datasets/cifar100_bs128.py',
    '../_base_/schedules/cifar_bs128_64k.py',
]

model = dict(
    backbone=dict(
        depth=28,
        block='basic',
        stem_channels=16,
        base_channels=160,
        shortcut='identity'),
    head=dict(num_classes=100, in_channels=640))
