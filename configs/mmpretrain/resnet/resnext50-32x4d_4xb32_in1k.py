# ResNeXt-50 32x4d on ImageNet-1k; paper row: Table 7, trained by the same recipe as the DS rows
# (4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# ResNeXt baseline = DSNet(shortcut='identity') with 32 groups of 4 channels, the same network as
# mmpretrain's ResNeXt(depth=50, groups=32, width_per_group=4) (tests/test_models/test_dsnet.py).
_base_ = [
    '../_base_/models/dsnet50_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]
custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmdsnet.DSNet',
        depth=50,
        shortcut='identity',
        block_cfg=dict(groups=32, width_per_group=4)))
