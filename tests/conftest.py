import os

# Tests run on the CPU, deterministically and offline, whatever machine they run on.
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# Two threads, or the cores shared among pytest-xdist's workers (-n; subprocesses inherit it).
THREADS = max(1, min(2, (os.cpu_count() or 1)
                     // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))
os.environ.setdefault('OMP_NUM_THREADS', str(THREADS))

import torch  # noqa: E402

torch.set_num_threads(THREADS)
