from mmdsnet.utils import collect_env
from mmdsnet.utils.env import check_env

GOOD = {'mmcv': '2.1.0', 'mmdet': '3.3.0', 'mmcv ops': 'yes', 'setuptools': '80.10.2'}


def test_the_installed_stack_fits_together():
    info = collect_env()
    assert info['mmcv'] == '2.1.0' and info['mmcv ops'] == 'yes'
    assert check_env(info) == []


def test_mmcv_too_new_for_mmdet_is_explained_in_plain_words():
    (msg, ) = check_env(dict(GOOD, mmcv='2.2.0'))
    assert 'mmcv 2.2.0 is too new for mmdet 3.3.0' in msg and 'mmcv < 2.2.0' in msg
    assert 'tools/setup_env.sh' in msg


def test_missing_ops_and_new_setuptools_are_explained():
    msgs = check_env(dict(GOOD, **{'mmcv ops': 'no (ModuleNotFoundError)',
                                   'setuptools': '82.0.0'}))
    assert any('no compiled ops' in m and 'detection (RoIAlign, NMS) does not' in m for m in msgs)
    assert any('setuptools 82.0.0 removed pkg_resources' in m for m in msgs)
