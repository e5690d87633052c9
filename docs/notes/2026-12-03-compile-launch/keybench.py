"""Host time per launch of the part of a Triton launch that the direct launches replace: Triton's
binder (specialization of every argument) and string cache key, against the direct launcher's
key and lookup; an aggregation launch with 3 sources (a DSNet50 stage's call), on the CPU (no
launch happens). Run: python docs/notes/2026-12-03-compile-launch/keybench.py"""
import timeit

import torch
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import compute_cache_key, create_function_from_signature

from mmdsnet.ops import triton_aggregate as ta


def main():
    fn = ta._aggregate_kernel
    binder = create_function_from_signature(fn.signature, fn.params,
                                            make_backend(GPUTarget('cuda', 90, 32)))

    def maps(k):
        return [torch.empty(2, 64, 14, 14) for _ in range(k)]

    def pad(ts):
        return ts + [None] * (ta.K - len(ts))
    x, out = maps(2)
    stats = [torch.empty(2, 32) for _ in range(6)]
    args = [x, out, torch.empty(3, 64), *pad(maps(3)), *pad(stats[:3]), *pad(stats[3:]),
            None, None, None, None, 64, 196, 0, 32, 2, 2, 1, 32, 1e-5,
            *[64 * 196, 196, 1] * 3]
    kw = dict(NUM=3, HAS_W=True, RELU=True, STATS=False, OVER_BATCH=False, ACC=tl.float32,
              BLOCK_C=4, BLOCK_HW=256, BLOCK_R=256)
    assert len(args) + len(kw) == len(fn.arg_names)
    key_cache, kernel_cache, direct_cache = {}, {}, {}
    direct = ta._Direct(fn)

    def triton_part():  # JITFunction.run up to its kernel-cache lookup
        kwargs = dict(kw, debug=False, instrumentation_mode='')
        _, specialization, options = binder(*args, **kwargs)
        kernel_cache.get(compute_cache_key(key_cache, specialization, options))

    def direct_part():
        direct_cache.get(direct.key(0, args, kw))
    n = 20000
    for name, f in (('triton binder + cache key', triton_part), ('direct key', direct_part)):
        f()
        ts = [timeit.timeit(f, number=n) / n * 1e6 for _ in range(5)]
        print(f'{name}: {min(ts):.2f} us per launch (min of 5 x {n})')


if __name__ == '__main__':
    main()
