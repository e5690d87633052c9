# WRN-50-2-bottleneck on ImageNet-1k; paper row: Table 7, trained by the same recipe as the DS
# rows (4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# WRN-50-2 baseline = DSNet(shortcut='identity') with the bottleneck's 3x3 conv twice as wide
# (width_per_group=128), the same network as mmpretrain's wide-resnet50 (ResNet with
# base_channels=128, expansion=2) and torchvision's wide_resnet50_2 (tests/test_models/).
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
        block_cfg=dict(width_per_group=128)))
