# Table 8, row DSNet50: Faster R-CNN + FPN, DSNet50 backbone from its ImageNet checkpoint,
# fine-tuned 5 epochs on COCO train2014, evaluated on val2014 (mAP@.5, mAP@.75, mAP@[.5:.95]).
# Total batch 16 (8 GPUs x 2 images); see ../_base_/schedules/schedule_5e.py for the schedule.
_base_ = [
    '../_base_/models/faster-rcnn_dsnet50_fpn.py',
    '../_base_/datasets/coco2014_detection.py',
    '../_base_/schedules/schedule_5e.py',
    '../_base_/default_runtime.py',
]

# The base detector's backbone is this row's: DSNet50 (frozen stem + stage 1, BN with norm_eval,
# init_cfg from checkpoints/dsnet50_in1k.pth with prefix 'backbone.').
