# Res2Net-50 26w x 4s on ImageNet-1k; paper row: Table 7 ("Res2Net", the baseline of
# DS2Res2Net50's "+0.40%"), trained by the same recipe as the DS rows (4 GPUs x 32 images,
# lr 0.05, 100 epochs, lr x0.1 every 30). mmpretrain's Res2Net, not our identity mode: see
# docs/classification.md, section 5.
_base_ = [
    '../_base_/models/res2net50-w26-s4_in1k.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/imagenet_bs128_100e.py',
]
custom_imports = dict(imports=['mmdsnet'], allow_failed_imports=False)
