# DenseNet201 on ImageNet-1k; paper row: Table 7, trained by the same recipe as the DS rows
# (4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30). mmpretrain's DenseNet, arch '201'.
_base_ = [
    '../_base_/models/densenet201_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]
custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)
