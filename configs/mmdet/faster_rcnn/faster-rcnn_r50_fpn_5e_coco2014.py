# Table 8, row ResNet50: the same detector and recipe with a plain ResNet50, written as
# DSNet(shortcut='identity'), which is mmpretrain's ResNet50 exactly (same keys, same outputs), so
# an mmpretrain ResNet50 checkpoint loads into it.
_base_ = [
    '../_base_/models/faster-rcnn_dsnet50_fpn.py',
    '../_base_/datasets/coco2014_detection.py',
    '../_base_/schedules/schedule_5e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='DSNet',
        depth=50,
        shortcut='identity',
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', prefix='backbone.',
                      checkpoint='checkpoints/resnet50_in1k.pth')))
