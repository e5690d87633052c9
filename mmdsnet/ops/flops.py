"""FLOP counting of the custom operators by mmengine's analysis tools, as for the reference form.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info`` and mmdet's / mmpretrain's
``get_flops.py``) traces the model with ``torch.jit`` and counts each node by its kind. Its
convention for the reference form of the aggregation: a parameter-free ``aten::group_norm`` or a
training ``aten::batch_norm`` counts 4 FLOPs per element, an evaluation-mode ``batch_norm``
without affine 1 per element, elementwise ``add`` / ``mul`` / ``relu`` nothing. The same
convention here: ``mmdsnet::norm_stats`` counts the 4 FLOPs per element of the norm it stands for
and ``mmdsnet::dense_aggregate`` the 1 per element of each source whose statistics are fixed
(an evaluation BatchNorm; an identity norm's ``mean=0, rstd=1`` count 0 as the reference has no
norm there), plus the 4 per element of the output's statistics when it computes them
(``out_groups``), so the totals equal the reference form's. Activations are not counted for
either (mmengine counts those of convolutions and matrix products only).
"""
from math import prod


def _shape(value):
    return value.type().sizes()


def _norm_stats_flops(inputs, outputs):
    return 4 * prod(_shape(inputs[0]))


def _constant_list(value):
    """A traced ``int[]`` argument: a constant, or a ListConstruct of constants."""
    constant = value.toIValue()
    if constant is not None:
        return list(constant)
    return [v.toIValue() for v in value.node().inputs()]


def _dense_aggregate_flops(inputs, outputs):
    # inputs: x, ys, means, rstds, weight, own_stats, relu, out_groups, ...; a list input is a
    # ListConstruct node. With out_groups, the output's statistics: a norm's 4 per element.
    ys = list(inputs[1].node().inputs())
    means = list(inputs[2].node().inputs())
    own = _constant_list(inputs[5])
    out_groups = inputs[7].toIValue() if len(inputs) > 7 else 0
    flops = 4 * prod(_shape(inputs[0])) if out_groups else 0
    for y, mean, is_own in zip(ys, means, own):
        if not is_own and prod(_shape(mean)) > 1:  # fixed, per-channel: evaluation BatchNorm
            flops += prod(_shape(y))
    return flops


def register_flop_handles() -> None:
    """Add the operators to mmengine's default FLOP handles (no-op without mmengine.analysis)."""
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:  # pragma: no cover
        return
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.update({
        'mmdsnet::norm_stats': _norm_stats_flops,
        'mmdsnet::dense_aggregate': _dense_aggregate_flops,
    })
    # Activations: mmengine counts those of convolutions and matrix products only (norms and
    # elementwise sums count none), so the operators are explicitly ignored (a None handle).
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.update({
        'mmdsnet::norm_stats': None,
        'mmdsnet::dense_aggregate': None,
    })
