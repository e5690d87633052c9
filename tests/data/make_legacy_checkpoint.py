# Run from a checkout of commit 1d19ef9 with PYTHONPATH set to it; kept to show how the file was made.
"""Written with mmdsnet at commit 1d19ef9 (before the aggregation became one module)."""
import torch

import mmdsnet
from mmdsnet.models import DS2Net

print(mmdsnet.__file__)
torch.manual_seed(0)
out = {}
for name, kw in [('ds2net38_gn', dict(shortcut_norm_cfg=dict(type='GN', num_groups=2))), ('ds2net38_bn', dict(shortcut_norm_cfg='BN'))]:
    m = DS2Net(depth=38, base_channels=4, stem='cifar', out_indices=(0, 1, 2, 3), **kw)
    m.init_weights()
    with torch.no_grad():  # non-trivial W and BN statistics, so a wrong key mapping shows
        for n, p in m.named_parameters():
            if 'shortcut' in n:
                p.copy_(torch.randn_like(p))
        m.train()
        for _ in range(2):
            m(torch.randn(4, 3, 8, 8))
    m.eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = m(x)
    out[name] = dict(state_dict=m.state_dict(), input=x, outputs=list(feats),
                     kwargs=dict(depth=38, base_channels=4, stem='cifar',
                                 out_indices=(0, 1, 2, 3), **kw))
torch.save(dict(meta=dict(written_by='mmdsnet 0.1.0 at commit 1d19ef9 (2026-11-27)'), models=out),
           'tests/data/legacy_ds2net38_1d19ef9.pth')
for k, v in out.items():
    print(k, len(v['state_dict']), [kk for kk in v['state_dict'] if 'shortcut' in kk or 'norms' in kk or 'inner_norm' in kk][:6])
