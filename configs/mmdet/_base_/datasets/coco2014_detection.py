# COCO 2014 detection as the paper's Table 8 uses it: train on train2014 (82,783 images), evaluate
# on val2014 (40,504 images, the paper's "validation"). The only place the 2014 paths live.
#
# Layout (tools/data/prepare_coco2014.py checks it and derives the minival json files):
#   data/coco/annotations/instances_train2014.json
#   data/coco/annotations/instances_val2014.json
#   data/coco/train2014/COCO_train2014_000000xxxxxx.jpg
#   data/coco/val2014/COCO_val2014_000000xxxxxx.jpg
#
# `Coco2014Dataset` (mmdsnet/datasets/coco.py) is mmdet's CocoDataset plus a check, before the
# run starts, that names a missing annotation file or image folder and compares the number of
# images the json lists with the number found on disk.
dataset_type = 'mmdsnet.Coco2014Dataset'
data_root = 'data/coco/'
backend_args = None

train_pipeline = [
    # mmcv's LoadImageFromFile, but an unreadable image is skipped with a warning (mmdsnet)
    dict(type='LoadImageOrSkip', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2014.json',
        data_prefix=dict(img='train2014/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2014.json',
        data_prefix=dict(img='val2014/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# mmdet's CocoMetric: bbox mAP@[.5:.95] ('coco/bbox_mAP'), mAP@.5 ('coco/bbox_mAP_50'), mAP@.75
# ('coco/bbox_mAP_75'): the three columns of Table 8. A child that moves data_root must set this
# ann_file too (it is a plain string, not re-joined); the tools' --data-root moves both.
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2014.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
