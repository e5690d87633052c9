# DenseNet-264 (Huang et al. 2017; growth rate 32, blocks 6/12/64/48, 64 stem channels,
# compression 0.5). mmpretrain 1.2's DenseNet ships only the 121/169/201/161 archs, so the arch
# is given as a dict; its 2688 output channels follow from the arch (64 + 6*32 -> 128,
# + 12*32 -> 256, + 64*32 -> 1152, + 48*32 = 2688). About 33.3M parameters, as in the paper.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmpretrain.DenseNet',
        arch=dict(growth_rate=32, depths=[6, 12, 64, 48], init_channels=64)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2688,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # Training accuracy in the log (paper Fig. 4 plots training error): the top-1 of each
        # training batch, augmented as trained (its cost: docs/classification.md, section 2).
        cal_acc=True))
