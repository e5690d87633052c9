"""tools/setup_env.sh on its cheap paths: a fake pip stands in for every install and for mmcv's
25-minute build (nothing is downloaded or compiled; the real wheel cache is not touched)."""
import os
import os.path as osp
import re
import stat
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')

# The venv's python: "-m pip ..." is logged and faked (download: an sdist with mmcv's c++17 flag;
# wheel: sleeps FAKE_BUILD_S, then writes a wheel), everything else runs the real interpreter.
FAKE_PYTHON = r'''#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip ${*:3} | MAX_JOBS=${MAX_JOBS:-} MMCV_WITH_OPS=${MMCV_WITH_OPS:-}" >> "$FAKE_LOG"
  dest="${@: -1}"
  case " $* " in
    *" download "*)
      tmp="$(mktemp -d)"; mkdir -p "$tmp/mmcv-2.1.0"
      echo "extra_compile_args = ['-std=c++17']" > "$tmp/mmcv-2.1.0/setup.py"
      tar -czf "$dest/mmcv-2.1.0.tar.gz" -C "$tmp" mmcv-2.1.0 ;;
    *" wheel "*)
      grep -q -- '-std=c++20' setup.py && echo "patched c++20" >> "$FAKE_LOG"
      sleep "${FAKE_BUILD_S:-0}"; mkdir -p "$dest"
      touch "$dest/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl" ;;
  esac
  exit 0
fi
exec REAL_PYTHON "$@"
'''


@pytest.fixture
def fake_env(tmp_path):
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    py = venv / 'bin' / 'python'
    py.write_text(FAKE_PYTHON.replace('REAL_PYTHON', sys.executable))
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, MMDSNET_VENV=str(venv), MMDSNET_CACHE=str(tmp_path / 'cache'),
               FAKE_LOG=str(tmp_path / 'pip.log'), PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')
    return venv, env, tmp_path


def _setup(env, **extra):
    res = subprocess.run(['bash', 'tools/setup_env.sh'], cwd=ROOT, env=dict(env, **extra),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return [ln for ln in res.stdout.splitlines() if ln.startswith('[setup_env')]


def test_the_script_parses():
    res = subprocess.run(['bash', '-n', SCRIPT], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow  # the setup script end to end, several runs in fresh shells (~20 s)
def test_first_setup_shows_progress_then_the_cached_wheel_and_the_stamp_are_used(fake_env):
    venv, env, tmp = fake_env
    lines = _setup(env, MAX_JOBS='3', MMDSNET_TICK='1', FAKE_BUILD_S='2.5')
    assert all(re.match(r'\[setup_env \+\d+:\d\d\] ', ln) for ln in lines), lines
    text = '\n'.join(lines)
    assert 'building mmcv 2.1.0 with its CPU ops, once per machine: 24-26 min on 2 cores; ' \
           '3 parallel jobs (MAX_JOBS)' in text
    assert len(re.findall(r'still compiling mmcv ops: \d+ min of about 25', text)) >= 1
    assert 'mmcv built in 0 min' in text and 'done: activate with' in text
    wheel = tmp / 'cache' / 'wheels' / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    assert f'installing {wheel} and the OpenMMLab stack' in text
    log = (tmp / 'pip.log').read_text()
    build = next(ln for ln in log.splitlines() if ' wheel ' in ln)
    assert 'MAX_JOBS=3 MMCV_WITH_OPS=1' in build and '--no-build-isolation' in build
    assert 'patched c++20' in log
    # the ticker stopped with the build: no line after "mmcv built"
    built = next(i for i, ln in enumerate(lines) if 'mmcv built' in ln)
    assert not any('still compiling' in ln for ln in lines[built:])

    # up to date: one line, no pip at all
    (tmp / 'pip.log').write_text('')
    assert [ln.split('] ', 1)[1] for ln in _setup(env)] == [f'environment up to date ({venv})']
    assert (tmp / 'pip.log').read_text() == ''

    # a changed stamp (new requirements): pip runs again, mmcv comes from the cached wheel
    (venv / '.mmdsnet-stamp').write_text('old\n')
    text = '\n'.join(_setup(env))
    assert 'building mmcv' not in text and f'installing {wheel}' in text
    assert ' wheel ' not in (tmp / 'pip.log').read_text()
