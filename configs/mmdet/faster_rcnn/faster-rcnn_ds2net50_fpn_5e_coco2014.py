# Table 8, row DS2Net50: as the DSNet50 row, with DS2Net's inner shortcut around each stride-1
# 3x3 conv. Backbone from the DS2Net50 ImageNet checkpoint.
_base_ = [
    '../_base_/models/faster-rcnn_dsnet50_fpn.py',
    '../_base_/datasets/coco2014_detection.py',
    '../_base_/schedules/schedule_5e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(type='mmdsnet.DS2Net',
                  init_cfg=dict(checkpoint='checkpoints/ds2net50_in1k.pth')))
