"""tools/demo.py's picture says what its columns are: ground truth, and predictions above the
score threshold."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('cv2')

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
import demo  # noqa: E402


def _ink(img):
    """Columns (x) holding any non-white pixel."""
    return np.nonzero((img < 250).any(axis=2).any(axis=0))[0]


def test_headings_band_centres_one_title_per_column():
    band = demo.headings_band([384, 384], ['ground truth', 'prediction (score >= 0.5)'])
    assert band.shape == (36, 768, 3) and band.dtype == np.uint8
    assert (band[:2] == 255).all() and (band[-2:] == 255).all()  # white margins above/below
    x = _ink(band)
    left, right = x[x < 384], x[x >= 384]
    assert len(left) and len(right)  # a title over each column ...
    assert left.max() < 384 - 4 and right.min() > 384 + 4  # ... inside its column
    assert abs((left.min() + left.max()) / 2 - 192) < 3  # centred
    assert abs((right.min() + right.max()) / 2 - 576) < 3


def test_headings_band_shrinks_a_title_to_fit_its_column():
    band = demo.headings_band([120, 120], ['prediction (score >= 0.5)', 'x'])
    x = _ink(band)
    assert x[x < 120].max() < 120  # the long title stays in its own column


@pytest.mark.slow
def test_demo_png_has_the_headings_and_the_json_the_threshold(tmp_path, monkeypatch):
    pytest.importorskip('mmcv.ops', reason='detection needs mmcv built with its ops')
    pytest.importorskip('mmdet')
    import mmcv
    titles = []
    real = demo.headings_band

    def spy(widths, names, **kw):
        titles.append(list(names))
        return real(widths, names, **kw)

    monkeypatch.setattr(demo, 'headings_band', spy)
    work = tmp_path / 'work'
    summary = demo.main(['--work-dir', str(work), '--epochs', '1', '--num-train', '8',
                         '--num-val', '2', '--num-vis', '2', '--no-eval-before'])
    assert titles == [['ground truth', f'prediction (score >= {demo.SCORE_THR:g})']]
    img = mmcv.imread(summary['predictions_png'])
    # the heading band, then one 384-px row (128-px image x3) per validation image
    assert img.shape[0] == 36 + 2 * 384 and img.shape[1] == 2 * 384
    assert (img[:36] > 200).mean() > 0.9 and len(_ink(img[:36])) > 0
    with open(work / 'demo_results.json') as f:
        assert json.load(f)['predictions_score_thr'] == demo.SCORE_THR
