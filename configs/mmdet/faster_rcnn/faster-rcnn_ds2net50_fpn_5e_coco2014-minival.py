# Quick evaluation variant of faster-rcnn_ds2net50_fpn_5e_coco2014.py: same training on train2014,
# evaluated on minival2014 (the 5,000 val2014 images that form val2017) instead of the 40,504 of
# val2014: 8x faster to evaluate. Not the paper's split. Its json is derived from
# instances_val2014.json and the val2017 image ids, offline, by
#   python tools/data/prepare_coco2014.py data/coco --make-minival
_base_ = './faster-rcnn_ds2net50_fpn_5e_coco2014.py'

val_dataloader = dict(
    dataset=dict(ann_file='annotations/instances_minival2014.json',
                 data_prefix=dict(img='val2014/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='data/coco/annotations/instances_minival2014.json')
test_evaluator = val_evaluator
