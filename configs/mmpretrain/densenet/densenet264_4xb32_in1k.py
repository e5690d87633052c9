# DenseNet264 on ImageNet-1k; paper rows: Table 7 and Table 9 (paper recipe:
# 4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# DenseNet-264 baseline (k=32, blocks 6/12/64/48): mmpretrain's DenseNet with a custom arch dict,
# since mmpretrain 1.2 ships only 121/169/201/161.
_base_ = [
    '../_base_/models/densenet264_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]
