# The paper's fine-tuning length: "finetuned on the COCO dataset with 5 epochs" (section 4.3); it
# gives nothing else. Our choice: mmdet's 1x recipe (SGD, lr 0.02 for a total batch of 16 = 8 GPUs
# x 2 images, momentum 0.9, weight decay 1e-4, 500-iteration linear warm-up) cut to 5 epochs with
# ONE lr drop (x0.1) after epoch 4. Why: 1x drops at 8/12 (67%) and 11/12 (92%) of training;
# a single drop at 80% keeps most of the short budget at the high lr and still leaves a full
# epoch at the low one; scaling 1x's two drops to 5 epochs would put them at 3.3 and 4.6, i.e.
# fractions of an epoch apart. (A choice, not measured here: no COCO run was made.)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=5, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=5, by_epoch=True, milestones=[4], gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))

# lr 0.02 is for 16 images per iteration. On by default (unlike mmdet's 1x, as in the
# classification schedules): the Runner rescales the lr linearly to the actual total batch, e.g.
# 1 GPU x 2 images -> lr 0.0025, instead of running a 1-GPU job at the 8-GPU lr.
auto_scale_lr = dict(enable=True, base_batch_size=16)
