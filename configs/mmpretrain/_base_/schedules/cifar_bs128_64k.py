# The paper's CIFAR recipe (section 4.1, after He et al. 2016): SGD momentum 0.9, weight decay
# 5e-4, lr 0.1 for a total batch of 128, 64k iterations, lr x0.1 at 32k and 48k.
_base_ = ['../default_runtime.py']

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=False, milestones=[32000, 48000], gamma=0.1)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=64000, val_interval=4000)
val_cfg = dict()
test_cfg = dict()

# Iteration-based logging and checkpoints (the paper counts iterations, not epochs).
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)

# On by default: lr scales linearly when the total batch is not 128 (the log says so).
auto_scale_lr = dict(base_batch_size=128, enable=True)
