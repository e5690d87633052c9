# Table 8, row DSNet50: Faster R-CNN + FPN, DSNet50 backbone from its ImageNet checkpoint,
# fine-tuned 5 epochs on COCO train2014, evaluated on val2014 (mAP@.5, mAP@.75, mAP@[.5:.95]).
# Total batch 16 (8 GPUs x 2 images); see ../_base_/schedules/schedule_5e.py for the schedule.
_base_ = [
    '../_base_/models/faster-rcnn_dsnet50_fpn.py',
    '../_base_/datasets/coco2014_detection.py',
    '../_base_/schedules/schedule_5e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,  # replace the base backbone wholesale, no leaked keys
        type='DSNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', prefix='backbone.',
                      checkpoint='checkpoints/dsnet50_in1k.pth')))
