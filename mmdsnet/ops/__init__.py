"""mmdsnet's custom operators (see :mod:`mmdsnet.ops.operators`).

``torch.ops.mmdsnet.norm_stats`` and ``torch.ops.mmdsnet.dense_aggregate`` (with its backward) are
registered when this package is imported. They have one implementation of stock ATen operators for
every device; a device-specific kernel is registered beside it with the operator's
``register_kernel(device_type)``: the Triton kernels of :mod:`mmdsnet.ops.triton_aggregate` for
CUDA tensors, wherever triton imports. Under ``torch.compile`` inductor compiles their
decompositions. :func:`use_implementation` is the one switch between those kernels and the ATen
implementation, between the eager calls and the dispatcher, between decomposed and opaque
operators under ``torch.compile``, and between direct and Triton-launched kernels.
mmengine's FLOP counter (what mmdet's and mmpretrain's ``get_flops.py`` use) learns their cost
here, counted as it counts the reference form.
"""
from .flops import register_flop_handles
from .operators import (aggregate, dense_aggregate, dense_aggregate_backward,
                        export_decompositions, kernel_for, new_chain, norm_stats, source_stats,
                        stats_dtype, use_implementation)

register_flop_handles()
try:  # CUDA tensors take the Triton kernels (triton_aggregate.py) where triton imports
    from .triton_aggregate import register_cuda_kernels
except ImportError:  # no triton (or a broken one): the ATen implementation everywhere
    pass
else:
    register_cuda_kernels()

__all__ = ['aggregate', 'dense_aggregate', 'dense_aggregate_backward', 'export_decompositions',
           'kernel_for', 'new_chain', 'norm_stats', 'source_stats', 'stats_dtype',
           'use_implementation']
