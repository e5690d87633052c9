# DS2Net50 on ImageNet-1k; paper rows: Table 7 and Table 9 (paper recipe:
# 4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# DS2Net50: DSNet50 plus the DS2 inner shortcut around each stride-1 3x3 conv.
_base_ = [
    '../_base_/models/dsnet50_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]

model = dict(backbone=dict(type='mmdsnet.DS2Net'))
