# DS2Net50 row with SyncBN, for multi-GPU runs that fine-tune BN statistics across GPUs
# (norm_eval=False). GPU only: SyncBatchNorm does not train on the CPU; on one process mmengine
# turns it back into BN. Also for the FPN and the RoI head: only the backbone has BN here.
_base_ = './faster-rcnn_ds2net50_fpn_5e_coco2014.py'

model = dict(backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True), norm_eval=False))
