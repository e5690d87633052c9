"""Direct launches of the Triton kernels (mmdsnet.ops.triton_aggregate._Direct), on the CPU:
the cache key against Triton's own specialization, and what a hit and a miss pass to whom. The
launch itself needs a GPU: tests/test_ops/test_ops_cuda.py runs it against ATen."""
import pytest
import torch

triton = pytest.importorskip('triton')
ta = pytest.importorskip('mmdsnet.ops.triton_aggregate')


def _specialization(arg, param):
    """What Triton's binder specializes ``arg`` on for kernel parameter ``param``
    (``JITFunction.run``'s ``specialize_impl`` call)."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    return native_specialize_impl(BaseBackend, arg, False, not param.do_not_specialize,
                                  not param.do_not_specialize_on_alignment)


def _arg_key(arg):
    """One positional argument's part of the direct launcher's key (as ``_Direct.launch``)."""
    return ta._Direct(_FakeKernel(['a'])).key(0, (arg, ), {})[1:]


class _FakeKernel:
    """A JITFunction's interface as the direct launcher uses it; ``fn[grid](...)`` records the
    call and returns a compiled kernel whose ``run`` records the launch."""

    def __init__(self, arg_names):
        self.arg_names, self.pre_run_hooks = list(arg_names), []
        self.jit_calls, self.runs = [], []
        runs = self.runs

        class Compiled:
            function, packed_metadata = 'function', 'metadata'

            @staticmethod
            def run(*args):
                runs.append(args)
        self.compiled = Compiled()

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.jit_calls.append((grid, args, kwargs))
            return self.compiled
        return run


class _FakeDriver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 1234


@pytest.fixture
def fake_driver():
    from triton.runtime import driver
    saved = driver._active
    driver.set_active(_FakeDriver())
    yield
    driver._active = saved


def _args():
    """Arguments of every kind Triton specializes: tensors of each dtype, 16-byte aligned or not
    (a view one element in), ints around the specialized values and the integer types' limits,
    floats, bools, None."""
    base = [torch.empty(64, dtype=dt) for dt in (torch.float32, torch.bfloat16, torch.float64,
                                                 torch.int32)]
    tensors = base + [t[1:] for t in base] + [t[8:] for t in base] + [t.view(8, 8) for t in base
                                                                      if t.numel() == 64]
    ints = [0, 1, 2, 15, 16, 17, 32, 48, -1, -16, 2**31 - 16, 2**31, 2**32, 2**63 - 16, 2**63,
            2**64 - 16]
    return tensors + ints + [1e-5, 1.0, 0.5, True, False, None]


@pytest.mark.parametrize('kernel', ['_aggregate_kernel', '_backward_apply_kernel'])
def test_key_refines_triton_specialization(kernel):
    """Arguments with the same key get the same specialization from Triton for every
    parameter of the kernel (specialized or not, on alignment or not): a cached variant is
    always the one JITFunction.run would pick."""
    params = [p for p in getattr(ta, kernel).params if not p.is_constexpr]
    for param in params:
        groups = {}
        for arg in _args():
            groups.setdefault(_arg_key(arg), set()).add(_specialization(arg, param))
        assert all(len(specs) == 1 for specs in groups.values()), (param.name, groups)
    # and the key does tell apart what Triton tells apart (so the test can fail)
    aligned, offset = torch.empty(64), torch.empty(64)[1:]
    assert _specialization(aligned, params[0]) != _specialization(offset, params[0])
    assert _arg_key(aligned) != _arg_key(offset)


def test_hit_launches_the_compiled_kernel_in_the_kernel_order(fake_driver):
    """A miss goes through ``fn[grid]`` (Triton compiles and launches) and caches its compiled
    kernel; a hit with other tensors of the same dtype and alignment calls the compiled
    kernel's launcher with the grid padded to 3, the current stream, and every argument in the
    kernel's parameter order (constexprs included), as ``JITFunction.run`` does. Unaligned
    tensors, other ints, other constexprs: a miss."""
    fake = _FakeKernel(['x_ptr', 'n', 'eps', 'y0', 'NUM', 'ACC'])
    direct = ta._Direct(fake)
    x, y = torch.empty(32), torch.empty(32)
    direct[(4, 2)](x, 7, 1e-5, y, NUM=1, ACC='f32')
    assert len(fake.jit_calls) == 1 and not fake.runs
    x2, y2 = torch.empty(32), torch.empty(32)
    direct[(4, 2)](x2, 7, 1e-5, y2, NUM=1, ACC='f32')
    assert len(fake.jit_calls) == 1
    assert fake.runs == [(4, 2, 1, 1234, 'function', 'metadata', None, None, None, x2, 7, 1e-5,
                          y2, 1, 'f32')]
    for args, constexprs in (((x[1:], 7, 1e-5, y), dict(NUM=1, ACC='f32')),
                             ((x, 16, 1e-5, y), dict(NUM=1, ACC='f32')),
                             ((x, 7, 1e-5, y.double()), dict(NUM=1, ACC='f32')),
                             ((x, 7, 1e-5, None), dict(NUM=0, ACC='f32'))):
        calls = len(fake.jit_calls)
        direct[(4, )](*args, **constexprs)
        assert len(fake.jit_calls) == calls + 1, (args, constexprs)
    assert len(fake.runs) == 1


def test_hooks_debug_and_the_switch_take_triton_run(fake_driver):
    """A launch hook (profilers; a callable or a non-empty HookChain), a pre-run hook, Triton's
    debug mode and ``use_implementation(launches='triton')`` each send every launch through
    ``fn[grid]``; a
    call whose keyword arguments are not the kernel's trailing parameters in order is never
    cached."""
    from mmdsnet.ops import use_implementation
    knobs = triton.knobs.runtime
    fake = _FakeKernel(['x_ptr', 'NUM'])
    direct = ta._Direct(fake)
    x = torch.empty(8)
    direct[(1, )](x, NUM=1)  # cached
    for name, value in (('launch_enter_hook', lambda *a: None),
                        ('launch_exit_hook', lambda *a: None), ('debug', True)):
        saved = getattr(knobs, name)
        setattr(knobs, name, value)
        try:
            direct[(1, )](x, NUM=1)
        finally:
            setattr(knobs, name, saved)
    chain = knobs.launch_enter_hook  # (Triton 3.x: a HookChain, empty unless a hook is added)
    if hasattr(chain, 'add'):
        hook = lambda *a: None  # noqa: E731
        chain.add(hook)
        try:
            direct[(1, )](x, NUM=1)
        finally:
            chain.remove(hook)
    fake.pre_run_hooks.append(lambda *a, **k: None)
    direct[(1, )](x, NUM=1)
    fake.pre_run_hooks.clear()
    with use_implementation(launches='triton'):
        direct[(1, )](x, NUM=1)
    assert len(fake.jit_calls) == 6 + hasattr(chain, 'add') and not fake.runs
    direct[(1, )](x, NUM=1)
    assert len(fake.runs) == 1
    misordered = ta._Direct(_FakeKernel(['x_ptr', 'NUM', 'ACC']))
    for _ in range(2):
        misordered[(1, )](x, ACC=1, NUM=1)
    assert len(misordered.fn.jit_calls) == 2 and not misordered.fn.runs


def test_every_kernel_has_a_direct_launcher():
    """The four kernels are launched through :class:`_Direct` (outside the interpreter, with
    this Triton's launch convention), and anything else (a test's stand-in, an interpreted
    kernel) is launched as it is."""
    assert ta._launch_convention_known(), triton.__version__
    for name in ('_stats_kernel', '_aggregate_kernel', '_backward_reduce_kernel',
                 '_backward_apply_kernel'):
        kernel = getattr(ta, name)
        launcher = ta._launcher(kernel)
        assert isinstance(launcher, ta._Direct) and launcher.fn is kernel, name
    stand_in = object()
    assert ta._launcher(stand_in) is stand_in
    assert len(ta._DIRECT) == 4
