# Res2Net-50 26w x 4s (Gao et al., TPAMI 2019), the paper's Table 7 "Res2Net" baseline:
# mmpretrain's own Res2Net, the stock model (7x7 stem, no deep stem, no avg-down), built as
# mmpretrain's res2net50-w26-s4 config builds it.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmpretrain.Res2Net',
        depth=50,
        scales=4,
        base_width=26,
        deep_stem=False,
        avg_down=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Training accuracy in the log (paper Fig. 4 plots training error): the top-1 of each
        # training batch, augmented as trained (its cost: docs/classification.md, section 2).
        cal_acc=True))
