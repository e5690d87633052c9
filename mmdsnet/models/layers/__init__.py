from .aggregation import (AGGREGATION_IMPLS, DenseAggregation, Source, aggregate_reference,
                          op_supports)
from .dense_shortcut import (ACT_TYPES, INIT_SCHEMES, DenseShortcut, act_is_relu,
                             build_shortcut_norm, gn_groups, init_values)

__all__ = [
    'AGGREGATION_IMPLS', 'DenseAggregation', 'Source', 'aggregate_reference',
    'op_supports', 'DenseShortcut', 'build_shortcut_norm', 'gn_groups', 'init_values',
    'INIT_SCHEMES', 'ACT_TYPES', 'act_is_relu'
]
