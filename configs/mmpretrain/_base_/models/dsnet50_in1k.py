# DSNet50 for ImageNet (7x7/2 stem + max pool, 1x width).
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdsnet.DSNet',
        depth=50,
        stem='imagenet',
        out_indices=(-1, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Training accuracy in the log (paper Fig. 4 plots training error): the top-1 of each
        # training batch, augmented as trained (its cost: docs/classification.md, section 2).
        cal_acc=True))
