# DSNet50 on ImageNet-1k; paper rows: Table 7 and Table 9 (paper recipe:
# 4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# DSNet50: ResNet50 with dense shortcuts (GN + channel-wise weights).
_base_ = [
    '../_base_/models/dsnet50_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]
