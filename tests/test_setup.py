"""Which Python `tools/setup.sh`, `tools/run.sh` and `tools/test.sh` use (`tools/env.sh`), tried with real interpreters.

The whole set-up on a stock machine (Debian's python3 only, a clean PATH and HOME) is run by `.ci/run` itself."""
import shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SYSTEM_PY = Path('/usr/bin/python3')
managed = (Path(subprocess.run([SYSTEM_PY, '-c', 'import sysconfig; print(sysconfig.get_path("stdlib"))'],
                               capture_output=True, text=True).stdout.strip())/'EXTERNALLY-MANAGED').exists() \
          if SYSTEM_PY.exists() else False

def chosen(repo, path, **env):
    "The interpreter `tools/env.sh` chooses in `repo` with `PATH=path` and the extra environment `env`."
    out = subprocess.run(['bash', '-c', 'source tools/env.sh && choose_python && echo "$MINIAI_PY"'], cwd=repo,
                         env={'PATH': path, 'HOME': str(repo), **env}, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())

@pytest.fixture
def repo(tmp_path):
    "A folder with the project's tools/ in it, and nothing set up."
    shutil.copytree(ROOT/'tools', tmp_path/'tools')
    return tmp_path

@pytest.mark.skipif(not managed, reason='needs a system python3 marked EXTERNALLY-MANAGED (PEP 668), as Debian 12 has')
def test_system_python_gets_a_project_venv(repo):
    assert chosen(repo, '/usr/bin:/bin') == repo/'.venv'/'bin'/'python'

@pytest.mark.skipif(not SYSTEM_PY.exists(), reason='needs /usr/bin/python3')
def test_an_active_venv_is_used(repo, tmp_path):
    venv = tmp_path/'somewhere'/'env'
    subprocess.run([SYSTEM_PY, '-m', 'venv', '--without-pip', venv], check=True)
    # activated, as `source env/bin/activate` leaves it
    assert chosen(repo, f'{venv}/bin:/usr/bin:/bin', VIRTUAL_ENV=str(venv)) == venv/'bin'/'python'
    # not activated but first on PATH (pyenv's shims work this way): still a Python pip may install into
    assert chosen(repo, f'{venv}/bin:/usr/bin:/bin') == venv/'bin'/'python3'

def test_a_conda_env_is_used(repo, tmp_path):
    # conda puts its env's bin first and sets CONDA_PREFIX; a plain interpreter stands in for conda's
    bin = tmp_path/'conda'/'bin'; bin.mkdir(parents=True)
    (bin/'python').symlink_to(sys.executable)
    assert chosen(repo, f'{bin}:/usr/bin:/bin', CONDA_PREFIX=str(bin.parent)) == bin/'python'

@pytest.mark.skipif(not managed, reason='needs a system python3 marked EXTERNALLY-MANAGED (PEP 668)')
def test_run_before_setup_says_what_to_do(repo):
    r = subprocess.run(['bash', 'tools/run.sh', 'miniai_train'], cwd=repo, env={'PATH': '/usr/bin:/bin', 'HOME': str(repo)},
                       capture_output=True, text=True)
    assert r.returncode == 1 and "run 'bash tools/setup.sh' first" in r.stderr and 'Traceback' not in r.stderr

@pytest.mark.skipif(not managed, reason='needs a system python3 marked EXTERNALLY-MANAGED (PEP 668)')
def test_run_uses_the_project_venv(repo, tmp_path):
    "After the set-up made `.venv`, `tools/run.sh CMD` runs CMD with that environment first on PATH, in the caller's folder."
    subprocess.run([SYSTEM_PY, '-m', 'venv', '--without-pip', repo/'.venv'], check=True)
    (tmp_path/'work').mkdir()
    r = subprocess.run(['bash', str(repo/'tools'/'run.sh'), 'bash', '-c', 'command -v python; pwd'], cwd=tmp_path/'work',
                       env={'PATH': '/usr/bin:/bin', 'HOME': str(repo)}, capture_output=True, text=True, check=True)
    assert r.stdout.split() == [str(repo/'.venv'/'bin'/'python'), str(tmp_path/'work')]
