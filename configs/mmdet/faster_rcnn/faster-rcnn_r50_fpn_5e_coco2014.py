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
    backbone=dict(shortcut='identity',
                  init_cfg=dict(checkpoint='checkpoints/resnet50_in1k.pth')))
