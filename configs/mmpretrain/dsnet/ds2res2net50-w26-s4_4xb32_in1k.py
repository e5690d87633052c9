# DS2Res2Net50 on ImageNet-1k; paper rows: Table 7 and Table 9 (paper recipe:
# 4 GPUs x 32 images, lr 0.05, 100 epochs, lr x0.1 every 30).
# DS2Res2Net50 26w x 4s: Res2Net-50 bottle2necks with dense shortcuts and DS2 around the
# multi-scale 3x3 group.
_base_ = [
    '../_base_/models/dsnet50_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]

model = dict(
    backbone=dict(
        type='mmdsnet.DS2Net',
        block='bottle2neck',
        # GN groups (our default rule, docs/design.md; the paper gives none): 26/26/32/32 groups
        # for the DS2 shortcut's 104/208/416/832 channels, 32 for the dense shortcuts' 256..2048.
        block_cfg=dict(base_width=26, scales=4)))
