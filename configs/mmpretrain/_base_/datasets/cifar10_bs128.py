# CIFAR-10 in mmpretrain's layout: data/cifar10/cifar-10-batches-py/
# (docs/classification.md). Paper 4.1: pad-4 random crop 32, horizontal flip, normalization by
# the training set's per-channel mean and std (mmpretrain's values, 0-255 scale).
dataset_type = 'CIFAR10'
data_root = 'data/cifar10'
data_preprocessor = dict(
    num_classes=10,
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
    to_rgb=False)  # the pickled batches are already RGB

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        download=False,  # offline: tools/train.py checks the files instead
        pipeline=train_pipeline),
    # The schedules count iterations (64k), not epochs: an endless shuffled stream, as in
    # mmpretrain's iteration-based configs. DefaultSampler would end every 391 iterations and
    # make mmengine warn "Reach the end of the dataloader" each time.
    sampler=dict(type='InfiniteSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# The paper reports CIFAR top-1 error on the 10k test images (its "validation" set).
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
