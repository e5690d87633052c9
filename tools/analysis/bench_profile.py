"""tools/analysis/benchmark.py's ``--profile`` and ``--python-profile``: where a training step's
time goes. ``runner`` is benchmark.py's Runner (its ``train_step``)."""
import os
import re
from typing import Optional

import torch


def torch_profile(runner, device, rows: int, trace: Optional[str] = None) -> str:
    """torch.profiler over one training step: the operators by self CPU time and, on CUDA, the
    GPU kernels launched and the GPU's busy time (far below the step's wall time: the step is
    bound by the CPU, i.e. Python, dispatch and launches). ``trace``: a Chrome trace file."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == 'cuda')
    with profile(activities=activities) as prof:
        runner.train_step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    if trace:
        prof.export_chrome_trace(trace)
    head = tail = ''
    if device.type == 'cuda':
        kernels = [e for e in prof.events() if e.device_type.name == 'CUDA']
        busy = sum(e.device_time for e in kernels) / 1e3
        head = f'one step: {len(kernels)} GPU kernels, GPU busy {busy:.1f} ms\n'
        # (where the GPU's own time goes: what bounds a step that the GPU bounds)
        tail = '\nby self GPU time:\n' + prof.key_averages().table(
            sort_by='self_device_time_total', row_limit=rows, max_name_column_width=48)
    return head + prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=rows,
                                            max_name_column_width=48) + tail


def python_profile(runner, device, steps: int, rows: int) -> str:
    """cProfile over ``steps`` training steps: the Python functions with the most own time."""
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        runner.train_step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats('tottime').print_stats(rows)
    return out.getvalue()


def profiles(runners, args, device, res: dict) -> None:
    """``--profile`` and ``--python-profile`` of every model (benchmark.py's Runners), into its
    result in ``res``, after one more (warm-up) step."""
    if args.trace_dir:
        os.makedirs(args.trace_dir, exist_ok=True)
    for r in runners:
        r.train_step()  # the timing may have been skipped: no one-off costs in the profile
        m = res['models'][r.spec]
        if args.profile:
            trace = args.trace_dir and os.path.join(
                args.trace_dir, re.sub(r'[^\w.=-]+', '_', r.spec).strip('_') + '.json')
            m['profile'] = torch_profile(r, device, args.profile_rows, trace)
            if trace:
                m['trace'] = trace
        if args.python_profile:
            m['python_profile'] = python_profile(r, device, args.python_profile,
                                                 args.profile_rows)
