"""The Triton kernels of mmdsnet/ops/triton_aggregate.py, checked on the CPU under Triton's
interpreter (``TRITON_INTERPRET=1``), against the operators' ATen implementation.

The interpreter must be switched on before triton is imported, and other tests import triton
without it, so the kernels run in ONE child process (tests/test_ops/interpreter_operators.py run as
a script, with the variable set only in that child's environment; the kernel cases are in
interpreter_kernels.py); each case below is one test here that reports that case's result from
the child. Cases:

* ``kernels[...]``: every kernel, through the three operator functions (``norm_stats``,
  ``dense_aggregate``, ``dense_aggregate_backward``: statistics, output, ``dL/dx``, every
  ``dL/dy_i``, ``dL/dW``, with several combinations of the gradients asked for), for every
  supported norm (GN with 1, 2 and 32 channels per group, LN, BatchNorm batch and running
  statistics, none), with and without ``W``, NCHW and channels_last, H x W = 5 x 7 (a multiple of
  no block size), N = 1 (one tile) and N = 2 with tiles shrunk so that every kernel runs many
  tiles with masked edges and the combine loops run several steps. The maps lie between NaNs in
  their storage, so a load past a mask shows. Falling back to ATen is an error in these cases,
  so they cannot pass without the kernels.
* tolerances (max absolute difference over max magnitude of the ATen result): float64 1e-12;
  float32 1e-5; tensors stored in bf16 1e-2 and fp16 2e-3 (about one unit in the last place of
  the largest element: both sides compute in float32 and round once); the float32 statistics
  and ``dL/dW`` of bf16 / fp16 inputs 1e-5.
* one call of a chain (``chain_backward``: the older sources' gradient sums started or added
  into, the last one finalized) against ``chain_backward_aten``, on a covering plan of the
  cases above; an aggregation with no source (``ReLU(t)`` and its statistics, DS2's inner
  source): one launch each way;
* the partial sums of the reduction kernels against torch (the chain's sums of ``h`` and
  ``h * y_hat`` too); 35 sources (DSNet152's stage 3) in runs of K, one launch per run and pass;
* with the kernels registered as the operators' CPU kernels: ``torch.library.opcheck`` (schema,
  fake implementation, autograd) on NCHW and channels_last; float64 ``gradcheck`` of the
  operator (GN, BatchNorm batch and running statistics, none); a DS2Net training step against
  the reference form in float64 (1e-9) and a DSNet bf16-autocast step against the ATen
  operators; the switch ``use_implementation`` (ATen: no kernel runs, eager or dispatched);
* the statistics of the output computed by the aggregation pass itself (``out_groups``), against
  ATen's statistics of the map it stored;
* the launch budget of one DSNet50 / DS2Net50 training step (one launch per aggregation
  forward, which also computes the statistics of the source it writes, ``Y_0`` and DS2's inner
  sources included, no statistics launch; at most two per backward, the stages' dense sums as
  chains: 44 / 109 launches; 40 / 92 with a statistics launch per ``Y_0`` and inner source,
  48 / 100 with one per source, 72 / 150 with the pointer-table kernels)
  and no host work per call but launching and allocating the outputs (a TorchDispatchMode
  around each call: no copy, no pinned memory, no ``.item()``, no temporary);
* inputs the kernels do not take (a strided slice, sources of two dtypes) give ATen's result
  without launching a kernel.

Outside the interpreter (this process): every kernel compiles to an H100 binary with triton's
own compiler (no GPU needed), unused source slots as compile-time None, and aligned sources get
vector loads; the CUDA kernels are
registered and the CPU keeps ATen; with triton hidden, mmdsnet imports and trains on the CPU as
before. Without triton installed, everything here is skipped.
"""
import json
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.skipif(
    find_spec('triton') is None,
    reason='triton is not installed: no Triton kernel is registered, ATen is all there is')

from interpreter_kernels import KERNEL_CASES  # noqa: E402
from interpreter_operators import OTHER_CASES  # noqa: E402

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'interpreter_operators.py')


# ---------------------------------------------------------------------- the tests (the parent)
@pytest.fixture(scope='module')
def interpreted():
    """Run every case once in a child process with TRITON_INTERPRET=1."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'results.json')
        env = dict(os.environ, TRITON_INTERPRET='1', CUDA_VISIBLE_DEVICES='',
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
        proc = subprocess.run([sys.executable, CHILD, path], env=env,
                              capture_output=True, text=True, timeout=1200)
        results = {}
        if os.path.exists(path):
            with open(path) as f:
                results = json.load(f)
        results['__child__'] = dict(returncode=proc.returncode, stderr=proc.stderr[-3000:])
        return results


def _result(interpreted, name):
    r = interpreted.get(name)
    assert r is not None, f'the interpreter child did not report {name}: ' \
        f'{interpreted["__child__"]}'
    assert r['ok'], r['error']


@pytest.mark.slow  # together about 2 minutes on 2 CPU cores (the interpreter is slow)
@pytest.mark.parametrize('name', sorted(KERNEL_CASES))
def test_kernels_against_aten(interpreted, name):
    _result(interpreted, f'kernels[{name}]')


@pytest.mark.slow
@pytest.mark.parametrize('name', list(OTHER_CASES))
def test_operator_on_interpreter(interpreted, name):
    _result(interpreted, name)


def test_cuda_kernels_are_registered_and_cpu_keeps_aten():
    import mmdsnet.ops  # noqa: F401
    for op in ('norm_stats', 'dense_aggregate', 'dense_aggregate_backward'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdsnet::{op}', 'CUDA'), op
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdsnet::{op}', 'CPU'), op


@pytest.mark.slow  # a fresh interpreter
def test_cpu_install_without_triton_is_untouched():
    """With triton hidden, mmdsnet imports, registers no CUDA kernel and computes on the CPU."""
    code = '\n'.join([
        'import sys',
        'sys.modules["triton"] = None  # import triton: ImportError; find_spec: None',
        'import torch',
        'from mmdsnet.models import DSNet',
        'assert sys.modules["triton"] is None',
        'assert not torch._C._dispatch_has_kernel_for_dispatch_key(',
        '    "mmdsnet::dense_aggregate", "CUDA")',
        'DSNet(depth=26, base_channels=8)(torch.randn(2, 3, 32, 32))[-1].sum().backward()',
        'print("ok")',
    ])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]


def _compile_cases():
    """Every kernel with every constexpr combination (source counts 1 and K) for float32 maps;
    for bf16 and float64 maps (other pointer and accumulator types) every kernel with K sources
    and each flag both ways."""
    import triton.language as tl

    from mmdsnet.ops import triton_aggregate as ta
    ptr = {tl.float32: '*fp32', tl.float64: '*fp64', tl.bfloat16: '*bf16'}
    for yt, acc in ((tl.float32, tl.float32), (tl.bfloat16, tl.float32), (tl.float64, tl.float64)):
        y, a = ptr[yt], ptr[acc]
        slots = {f'{k}{i}': t for k, t in (('y', y), ('m', a), ('r', a), ('z', y))
                 for i in range(ta.K)}
        maps = dict(slots, grad_ptr=y, out_ptr=y, dx_ptr=y, x_ptr=y, h_ptr=y, part_ptr=a,
                    w_ptr=a, dw_ptr=a, mean_ptr=a, rstd_ptr=a, count_ptr='*i32', eps='fp32')
        for over_batch in (True, False):
            yield ta._stats_kernel, dict(maps, y_ptr=y), dict(
                OVER_BATCH=over_batch, ACC=acc, BLOCK_C=4, BLOCK_HW=512, BLOCK_R=256)
        full = yt == tl.float32
        for num in (1, ta.K) if full else (ta.K, ):
            # the launcher passes unused slots as None, i.e. compile-time constants
            unused = {f'{k}{i}': None for k in 'ymr' for i in range(num, ta.K)}
            for flag in (True, False):
                # with the output's statistics (GN or BatchNorm's), or none (no pointers)
                no_stats = {} if flag else {k: None for k in ('part_ptr', 'count_ptr',
                                                              'mean_ptr', 'rstd_ptr')}
                yield ta._aggregate_kernel, maps, dict(
                    unused, **no_stats, NUM=num, HAS_W=flag, RELU=not flag, STATS=flag,
                    OVER_BATCH=acc == tl.float64, ACC=acc, BLOCK_C=64, BLOCK_HW=32,
                    BLOCK_R=32)
                # (the merge of the group sums per sample by one channel block, or over the
                # batch and any span of blocks)
                yield ta._backward_reduce_kernel, maps, dict(
                    unused, NUM=num, SUM_G=flag, G_FROM_DX=not flag, FINAL_H=flag,
                    HAS_W=not flag, MERGE=(1 << num) - 1, PER_SAMPLE=flag,
                    **({'SPAN': 1} if flag else {}),  # (1: Triton's constexpr; else an i32)
                    RELU=flag, ACC=acc, BLOCK_C=4, BLOCK_HW=512, BLOCK_R=256)
                # (a chain's flags: each both ways, in float32 and in the other dtypes)
                for own in (True, False) if full else (flag, ):
                    yield ta._backward_apply_kernel, maps, dict(
                        unused, **{f'z{i}': None for i in range(num, ta.K)}, NUM=num, OWN=own,
                        NEED_Y=flag or own, NEED_W=not flag, HAS_W=own, ACCUM=own, ADD=flag,
                        LAST=int(flag != own or not full), FINAL_H=flag, G_FROM_DX=flag,
                        RELU=own, ACC=acc, BLOCK_C=4, BLOCK_HW=512, BLOCK_R=512)


def test_flat_strides_match_a_view():
    """``_flat`` (the kernels' reading of a map as ``(N, C, HW)`` strides; its 4-d fast path
    included) agrees with torch: spatial dimensions collapse to one stride exactly when
    ``view(N, C, -1)`` works, and then with that view's stride. Every layout of 1 to 5 rows and
    columns: contiguous, channels_last, transposed, strided slices, expanded."""
    import itertools

    from mmdsnet.ops import triton_aggregate as ta
    checked = 0
    for h, w in itertools.product([1, 2, 3, 5], repeat=2):
        base = torch.randn(2, 3, 2 * h + 1, 2 * w + 1)
        for t in (base[:, :, :h, :w], base[:, :, ::2, :w][:, :, :h], base[:, :, :h, ::2][..., :w],
                  base[:, :, :h, :w].contiguous(memory_format=torch.channels_last),
                  base[:, :, :h, :w].transpose(2, 3), base[:, :, :h, :w].contiguous(),
                  torch.randn(2, 3, 1, 1).expand(2, 3, h, w), torch.randn(2, 3, h * w)):
            try:
                v = t.view(2, 3, -1)
            except RuntimeError:
                expected = None
            else:
                expected = t.stride(0), t.stride(1), v.stride(2) if v.shape[2] > 1 else 1
            assert ta._flat(t) == expected, (t.shape, t.stride(), ta._flat(t), expected)
            checked += expected is None
    assert checked > 0  # (some layouts do not collapse)


def test_kernels_compile_for_a_gpu():
    """The interpreter runs Python semantics; the real compiler is stricter (types of
    loop-carried values, pointer casts, masks, atomics). Every kernel compiles, here on the CPU,
    to an H100 (sm_90) binary with the compiler and ptxas that come with triton."""
    import triton
    from triton.backends.compiler import GPUTarget
    target = GPUTarget('cuda', 90, 32)
    count = 0
    for kernel, types, constexprs in _compile_cases():
        signature = {name: 'constexpr' if name in constexprs else types.get(name, 'i32')
                     for name in kernel.arg_names}
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=target)
        assert compiled.asm.get('cubin'), kernel.__name__
        count += 1
    assert count == (2 + 2 * 2 * (1 + 1 + 2)) + 2 * (2 + 2 * (1 + 1 + 1))


def test_aligned_sources_get_vector_loads():
    """The sources are pointer arguments, so Triton's launcher specializes them on 16-byte
    alignment like any tensor argument: with the alignment (what the JIT sees for tensors from
    the caching allocator), the forward kernel's loads of the sources become 16-byte vector
    loads (NCHW float32, strides and sizes multiples of 16)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget

    from mmdsnet.ops import triton_aggregate as ta
    kernel = ta._aggregate_kernel
    names = kernel.arg_names
    vector_loads = {}
    for aligned in (False, True):
        constexprs = dict({f'{k}{i}': None for k in 'ymr' for i in range(3, ta.K)},
                          part_ptr=None, count_ptr=None, mean_ptr=None, rstd_ptr=None, sxh=1,
                          syh=1, soh=1, NUM=3, HAS_W=True, RELU=True, STATS=False,
                          OVER_BATCH=False, ACC=tl.float32, BLOCK_C=4, BLOCK_HW=512,
                          BLOCK_R=256)
        types = {n: '*fp32' for n in names if n.endswith('_ptr') or n[0] in 'ymr'}
        signature = {n: 'constexpr' if n in constexprs else types.get(n, 'i32') for n in names}
        divisible = ['x_ptr', 'out_ptr', 'w_ptr', 'm0', 'r0', 'C', 'HW', 'sxn', 'sxc', 'syn',
                     'syc', 'son', 'soc'] + [f'y{i}' for i in range(3) if aligned]
        attrs = {(names.index(n), ): [['tt.divisibility', 16]] for n in divisible}
        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                                        attrs=attrs)
        ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32)).asm['ptx']
        vector_loads[aligned] = ptx.count('ld.global.v4')
    assert vector_loads[True] > vector_loads[False], vector_loads
