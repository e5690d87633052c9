# An ImageClassifier on the CIFAR stem (3x3/1 conv, no max pool) for every CIFAR row: DSNet50 at
# 1x width unless the leaf says otherwise. Leaves set the backbone type (mmdsnet.DS2Net),
# depth (26..101, 29 for ResNeXt-29, 28 + block='basic' for WRN-28), block_cfg, shortcut and
# width (backbone.base_channels 16 / 32 / 64 = 0.25x / 0.5x / 1x), and head.in_channels with it:
# tools/train.py refuses a head whose in_channels differ from the backbone's out_channels.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdsnet.DSNet',
        depth=50,
        stem='cifar',
        base_channels=64,
        out_indices=(-1, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Training accuracy in the log (paper Fig. 4 plots training error): the top-1 of each
        # training batch, augmented as trained (its cost: docs/classification.md, section 2).
        cal_acc=True))
