# Table 8 (DS2Net50): Faster R-CNN + FPN, DS2Net50 backbone from its ImageNet checkpoint, 5 epochs
# on COCO train2014, evaluated on val2014.
# `python tools/train.py configs/faster_rcnn_ds2net50_coco.py`.
# Everything lives in the file below; this one only gives it the short name users type.
_base_ = './mmdet/faster_rcnn/faster-rcnn_ds2net50_fpn_5e_coco2014.py'
