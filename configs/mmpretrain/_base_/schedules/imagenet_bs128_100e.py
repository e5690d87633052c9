# The paper's ImageNet recipe (section 4.2): 4 GPUs x 32 = batch 128, SGD momentum 0.9, lr 0.05
# (0.1 for 256, linearly scaled), weight decay 1e-4, 100 epochs, lr x0.1 every 30 epochs.
_base_ = ['../default_runtime.py']

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# On by default: lr scales linearly when the total batch is not 128 (the log says so).
auto_scale_lr = dict(base_batch_size=128, enable=True)
