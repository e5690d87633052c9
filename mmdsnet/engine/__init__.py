"""Runtime glue between mmdsnet's tools and MMEngine's Runner."""


def prepare_cfg(cfg, launcher: str = 'none'):
    """Adjust a loaded config for this machine before ``Runner.from_cfg`` (see tools/train.py).

    Placeholder: the CPU/gloo distributed path and atomic checkpoints land here (issue 5).
    """
    return cfg


__all__ = ['prepare_cfg']
