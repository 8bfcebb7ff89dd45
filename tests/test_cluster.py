"""miniai_train on a cluster: SIGTERM (what a scheduler sends before it kills) stops a run at a batch boundary with its
place saved, exit status 143; `--auto_resume` continues it with the same command line; torchrun's elastic agent
(`--max-restarts`) restarts a group whose worker was SIGKILLed and the run resumes by itself; two torchrun launches
with `--nnodes 2` and a c10d rendezvous on 127.0.0.1 (two "machines") train to the weights of one launch with two
processes, only the main node writes the run folder, and a node killed and relaunched resumes. Every run ends with
the uninterrupted two-process run's weights and CSV files.

This file is also the worker that torchrun starts: `python test_cluster.py OUT JOBS` runs each job of JSON list JOBS
(`[name, kwargs, faults]`) through `miniai.commands.main`, in order, and records each job's exit status in
OUT/codes-RANK-RESTART.json. Faults (by rank) happen only in the group's first start (TORCHELASTIC_RESTART_COUNT 0),
or in start `restart`: `{"R": {"batch": N, "sig": "KILL"|"TERM"|"TERM_ALL"}}` signals process R after its N-th training batch
(TERM_ALL: rank R sends SIGTERM to the torchrun agent, to itself and to the other worker, as a scheduler signals
every process of a job); `{"R": {"kill_at": "save_tmp_written@1:TERM"}}` sets the library's test hook for that job."""
import json, os, signal, socket, subprocess, sys, sysconfig, time
from pathlib import Path

def _worker(out, jobs):
    import torch
    torch.set_num_threads(1)
    import miniai.commands as commands
    rank, restart = int(os.environ['RANK']), int(os.environ.get('TORCHELASTIC_RESTART_COUNT', '0'))
    (out/f'pid-{rank}').write_text(str(os.getpid()))
    codes, orig = [], commands.RunLogCB.after_batch
    for name, kwargs, faults in jobs:
        fault = (faults or {}).get(str(rank))
        fault = fault if fault and fault.get('restart', 0) == restart else None
        commands.RunLogCB.after_batch = orig
        os.environ.pop('MINIAI_TEST_KILL_AT', None)
        if fault and 'kill_at' in fault: os.environ['MINIAI_TEST_KILL_AT'] = fault['kill_at']
        elif fault:
            count = [0]
            def after_batch(self, learn, fault=fault, count=count):
                orig(self, learn)
                if not learn.training: return
                count[0] += 1
                if count[0] != fault['batch']: return
                if fault['sig'] == 'TERM_ALL':   # the agent, then the other worker, then this one
                    others = [int(p.read_text()) for p in out.glob('pid-*') if p.name != f'pid-{rank}']
                    for pid in [os.getppid(), *others, os.getpid()]: os.kill(pid, signal.SIGTERM)
                else: os.kill(os.getpid(), signal.SIGKILL if fault['sig'] == 'KILL' else signal.SIGTERM)
            commands.RunLogCB.after_batch = after_batch
        try:
            commands.main(**kwargs)
            codes.append([name, 0])
        except SystemExit as e:
            if isinstance(e.code, str): print(e.code, file=sys.stderr)   # as Python prints it when the command exits
            codes.append([name, e.code if isinstance(e.code, int) else 1])
        (out/f'codes-{rank}-{restart}.json').write_text(json.dumps(codes))
    commands.RunLogCB.after_batch = orig

if __name__ == '__main__':
    _worker(Path(sys.argv[1]), json.loads(sys.argv[2]))
    sys.exit(0)


import pytest
import torch
from miniai.checkpoint import read_checkpoint
from miniai.commands import read_rows, RUN_FILES
from conftest import make_idx_folder

SCRIPTS = sysconfig.get_path('scripts')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'MPLBACKEND': 'Agg',
       'HF_DATASETS_DISABLE_PROGRESS_BARS': '1', 'TORCHELASTIC_ERROR_FILE': ''}
ENV.pop('MINIAI_TEST_KILL_AT', None)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(out, jobs, *torchrun_args, cwd=None, env=None):
    "Start torchrun with this file as the worker; the Popen."
    return subprocess.Popen([os.path.join(SCRIPTS, 'torchrun'), *torchrun_args, __file__, str(out), json.dumps(jobs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or ENV, cwd=cwd)

def finish(*procs, timeout=240):
    "Wait for each launch; their (exit status, stdout, stderr)."
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]

def codes(out, rank, restart=0): return json.loads((out/f'codes-{rank}-{restart}.json').read_text())

def same_run(a, b):
    "Whether run folders `a` and `b` end with the same weights (last.pt) and the same CSV rows."
    wa, wb = read_checkpoint(a/'last.pt')['model'], read_checkpoint(b/'last.pt')['model']
    return (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
            and read_rows(a/'metrics.csv') == read_rows(b/'metrics.csv') and read_rows(a/'batches.csv') == read_rows(b/'batches.csv'))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp('idx')
    make_idx_folder(folder, n_train=160, n_test=20)
    return str(folder)


TINY = dict(epochs=3, bs=32, widths='4,4,4,4', n_holdout=32, auto_resume=True)   # 4 batches an epoch: 2 per process
# The agent's shared TCP store keeps the first start's addresses: a restarted group's gloo then connects to the killed
# worker's old port (connection refused). With this, each start gets a store of its own (README: On a cluster).
ELASTIC_ENV = {**ENV, 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE': '1'}

@pytest.fixture(scope='module')
def launched(data, tmp_path_factory):
    """One torchrun launch, two processes, `--max-restarts 1`, every job run with --auto_resume and --out (the command
    line a requeued job repeats): an uninterrupted run; SIGTERM to one process mid-epoch, then the same command; SIGTERM
    to both; SIGTERM inside the write of a checkpoint; then SIGKILL of one worker mid-epoch, which torchrun's agent
    answers by restarting the group: the restarted workers run every job again; the finished ones have nothing to do,
    the killed one resumes from its last checkpoint; then SIGTERM reaches the agent and both workers (the launch ends
    there; the test with two nodes resumes that run)."""
    out = tmp_path_factory.mktemp('launch')
    def job(name, **faults): return [name, {**TINY, 'data': data, 'out': str(out/name)}, faults]
    jobs = [job('ref'),
            job('term_one', **{'1': {'batch': 3, 'sig': 'TERM'}}), job('term_one'),
            job('term_both', **{'0': {'batch': 4, 'sig': 'TERM'}, '1': {'batch': 4, 'sig': 'TERM'}}), job('term_both'),
            job('term_in_write', **{'0': {'kill_at': 'save_tmp_written@2:TERM'}}), job('term_in_write'),
            job('elastic', **{'1': {'batch': 3, 'sig': 'KILL'}}),
            # in the restarted group: SIGTERM to the agent and both workers, as a scheduler signals every process of a job
            job('term_all', **{'0': {'batch': 3, 'sig': 'TERM_ALL', 'restart': 1}})]
    start = time.time()
    (rc, stdout, stderr), = finish(launch(out, jobs, '--standalone', '--nproc-per-node', '2', '--max-restarts', '1', env=ELASTIC_ENV))
    print(f'torchrun launch with a restart: {time.time()-start:.1f}s')
    return out, jobs, rc, stderr


def test_sigterm_and_elastic_restarts_under_torchrun(launched):
    "Each stopped run exits with 143 and one line, and the same command resumes it; the elastic restart resumes by itself; each ends as the uninterrupted run; SIGTERM to every process stops all."
    tmp_path, jobs, rc, stderr = launched
    assert rc != 0, stderr[-3000:]   # the agent was sent SIGTERM at the end
    ref = tmp_path/'ref'
    assert sorted(p.name for p in ref.iterdir()) == sorted(RUN_FILES)
    for rank in (0, 1):   # first start: each stopped job exits with 143 and the same command resumes it; the elastic job is killed
        assert codes(tmp_path, rank) == [['ref', 0], ['term_one', 143], ['term_one', 0], ['term_both', 143], ['term_both', 0],
                                         ['term_in_write', 143], ['term_in_write', 0]], codes(tmp_path, rank)
        # the agent restarted the group once: every job again, the elastic one resumed and finished
        assert codes(tmp_path, rank, restart=1) == [[j[0], 0] for j in jobs[:-1]] + [['term_all', 143]], codes(tmp_path, rank, restart=1)
    for name in ('term_one', 'term_both', 'term_in_write', 'elastic'):
        assert same_run(tmp_path/name, ref), name
    # One line per stop, from the main process: where the run is kept, and how to continue
    stops = [l for l in stderr.splitlines() if 'miniai_train: stopped (SIGTERM)' in l]
    assert len(stops) == 4, stderr[-3000:]
    assert f"{tmp_path/'term_one'/'last.pt'} holds the run to batch 1 of epoch 2" in stops[0]   # 4 batches an epoch, 2 per process
    assert stops[0].endswith(f"Continue with: the same launch command with --resume {tmp_path/'term_one'} (or --auto_resume --out {tmp_path/'term_one'})")
    assert f"{tmp_path/'term_in_write'/'last.pt'} holds the run to the end of epoch 2" in stops[2]
    assert f"{tmp_path/'term_all'/'last.pt'} holds the run to batch 1 of epoch 2" in stops[3]


def test_two_nodes(data, launched, tmp_path):
    """Two torchrun launches with --nnodes 2 and a c10d rendezvous on 127.0.0.1, as two machines would run them: the
    same weights and CSV files as one launch with two processes; only the main node's main process writes the run folder (each node
    runs in a folder of its own, with a relative --out); one node's process SIGKILLed mid-epoch, both nodes launched
    again: the run resumes (and so does the run that SIGTERM to every process stopped, now on two nodes). All end as the
    uninterrupted run."""
    ref = launched[0]/'ref'
    def job(name, out=None, **faults): return [name, {**TINY, 'data': data, 'out': out or str(tmp_path/name)}, faults]
    nodes = [tmp_path/'node_a', tmp_path/'node_b']
    for n in nodes: n.mkdir()
    def two_nodes(jobs, rdzv_id):
        port = free_port()
        return finish(*[launch(n, jobs, '--nnodes', '2', '--nproc-per-node', '1', '--rdzv-backend', 'c10d',
                               '--rdzv-endpoint', f'127.0.0.1:{port}', '--rdzv-id', rdzv_id, cwd=n) for n in nodes])
    first = two_nodes([job('fresh', out='run'), job('killed', **{'1': {'batch': 3, 'sig': 'KILL'}})], 'first')
    assert all(rc != 0 for rc, _, _ in first)   # a node's process was killed: both launches fail
    main_node = next(n for n in nodes if (n/'pid-0').exists())
    assert [n for n in nodes if (n/'run').exists()] == [main_node]   # only the main node wrote its run folder
    assert same_run(main_node/'run', ref)                           # two nodes train as two processes on one
    second = two_nodes([job('killed'), job('term_all', out=str(launched[0]/'term_all'))], 'second')
    assert all(rc == 0 for rc, _, _ in second), second[0][2][-3000:] + second[1][2][-3000:]
    for folder in (tmp_path/'killed', launched[0]/'term_all'): assert same_run(folder, ref), folder
