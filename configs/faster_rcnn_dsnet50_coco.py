# Table 8 (DSNet50): Faster R-CNN + FPN, DSNet50 backbone from its ImageNet checkpoint, 5 epochs
# on COCO train2014, evaluated on val2014.
# `python tools/train.py configs/faster_rcnn_dsnet50_coco.py`.
# Everything lives in the file below; this one only gives it the short name users type.
_base_ = './mmdet/faster_rcnn/faster-rcnn_dsnet50_fpn_5e_coco2014.py'
