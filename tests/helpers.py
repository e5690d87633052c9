"""Shared test helpers (importable from every test folder: pytest puts tests/, the folder of
conftest.py, on sys.path)."""
import contextlib
import importlib.util
import os.path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository
#: Every shortcut norm the operators know, as ``shortcut_norm_cfg`` values.
NORMS = {'GN': dict(type='GN', num_groups=4), 'LN': 'LN', 'IN': 'IN', 'BN': 'BN', 'none': None}


def load_tool(path, name=None):
    """``tools/<path>`` (e.g. ``'analysis/benchmark.py'``) imported as a module of its own, named
    ``name`` (default ``_tool_<file stem>``): the tools are scripts, not a package."""
    stem = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name or f'_tool_{stem}',
                                                  osp.join(ROOT, 'tools', path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomize(model, seed=0):
    """Random weights and BN statistics everywhere, scaled so that deep nets stay finite.

    Zero-init residuals, unit W and fresh running statistics would hide mistakes: convs get
    fan-in-scaled noise, norm scales 0.5-1, norm biases and the shortcut weights W noise around 0
    (some negative), running means/vars random.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and 'shortcut' not in name:  # convs (W is (l, C, 1, 1): not a conv)
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel()**0.5)
            elif name.endswith('.weight') and 'shortcut' not in name:  # norm scales
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            else:  # norm biases, shortcut weights W
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def reference_twin(model, build):
    """The oracle the custom operators are checked against: ``build(aggregation_impl=
    'reference')``, the same network with every dense aggregation in the straightforward
    reference form (:func:`mmdsnet.models.layers.aggregate_reference` over the norm modules' own
    outputs), holding ``model``'s parameters and buffers, in its dtype and mode. ``build`` takes
    the model's keyword arguments (e.g. ``functools.partial(DSNet, depth=26)``)."""
    twin = build(aggregation_impl='reference').to(next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.train(model.training)


def bn_eval(agg):
    """The BN-eval case of a gradcheck: ``agg`` in eval mode with random running statistics."""
    agg.eval()
    for m in agg.norms:
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2)
    return agg


def gradcheck_inputs(sources=3):
    """``x`` and ``sources`` maps ``Y_i``, float64 ``(2, 8, 2, 3)``, requiring grad."""
    t = lambda: torch.randn(2, 8, 2, 3, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return t(), [t() for _ in range(sources)]


#: The Triton kernels of mmdsnet.ops.triton_aggregate, by attribute name.
KERNELS = ('_stats_kernel', '_aggregate_kernel', '_backward_reduce_kernel',
           '_backward_apply_kernel')


@contextlib.contextmanager
def count_launches(module):
    """Every launch of ``module``'s :data:`KERNELS`, by name, in order; the kernels still run."""
    saved = {k: getattr(module, k) for k in KERNELS}
    launches = []

    class Counted:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launches.append(self.name)
            return self.kernel[grid]
    for k, v in saved.items():
        setattr(module, k, Counted(k, v))
    try:
        yield launches
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
