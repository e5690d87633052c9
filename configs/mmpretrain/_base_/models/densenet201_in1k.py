# DenseNet-201 (Huang et al. 2017; growth rate 32, blocks 6/12/48/32), the paper's Table 7
# baseline: mmpretrain's own DenseNet with its stock '201' arch (1920 output channels).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmpretrain.DenseNet', arch='201'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1920,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Training accuracy in the log (paper Fig. 4 plots training error): the top-1 of each
        # training batch, augmented as trained (its cost: docs/classification.md, section 2).
        cal_acc=True))
