"""Faults in checkpoints and logs: a latest checkpoint that is corrupted or does not fit is reported in
one line and the previous one is used; a torn, missing or deleted log file is warned about, naming it;
every re-run ends bit-identical to an uninterrupted run. (Truncated checkpoint files: test_trainer.)"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import tiny
from experiments.recipes import runs
from experiments.training import metrics as metrics_lib
from mixing import checkpoint as checkpoint_lib


def _config():
  config = tiny.get_config()
  config.steps = 10  # checkpoints at 5 and 10
  config.mixer.update_every = 3  # mixer.jsonl rows at steps 0, 3, 6, 9
  return config


def _rows(workdir, name='metrics.jsonl'):
  rows = metrics_lib.read_jsonl(str(workdir / name))
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in rows]


def _leaves(trainer):
  return [np.asarray(x) for x in jax.tree.leaves(trainer.state)]


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
  """An uninterrupted run: its workdir and final state."""
  workdir = tmp_path_factory.mktemp('whole')
  trainer = runs.make_trainer(_config(), str(workdir), quiet=True)
  trainer.run()
  return workdir, _leaves(trainer)


def _copy_of(whole, tmp_path, drop_last_checkpoint=False):
  """The finished run's workdir, to break; without its last checkpoint, it is a run killed after
  step 10's log lines were written and before its checkpoint was committed."""
  run = tmp_path / 'run'
  shutil.copytree(whole[0], run)
  if drop_last_checkpoint:
    shutil.rmtree(run / 'checkpoints' / '10')
  return run


def _rerun(run, capsys, wrap=None):
  """Runs the config to its end in `run`; (its printed lines, the trainer)."""
  capsys.readouterr()
  trainer = runs.make_trainer(_config(), str(run), quiet=True)
  if wrap:
    trainer.train_fn = wrap(trainer.train_fn)
  trainer.run()
  return capsys.readouterr().out.splitlines(), trainer


def _assert_same_as_whole(run, trainer, whole):
  assert trainer.step == 10
  for a, b in zip(_leaves(trainer), whole[1], strict=True):
    np.testing.assert_array_equal(a, b)
  for name in ('metrics.jsonl', 'mixer.jsonl'):
    assert _rows(run, name) == _rows(whole[0], name), name


def _edit_meta(run, edit, keep_checksums):
  path = run / 'checkpoints' / '10' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  edit(meta)
  if not keep_checksums:  # as a checkpoint written before checkpoints had checksums
    del meta['__checksums__']
  path.write_text(json.dumps(meta))


def _no_samplers(meta):
  del meta['samplers']


def _two_domains(meta):
  meta['samplers'][0]['positions_D'] = {'__array__': [1, 2], 'dtype': 'int64', 'shape': [2]}


def _more_tokens(meta):
  meta['tokens_seen'] += 1


def _flip_bytes_of_largest_array_file(run):
  files = [os.path.join(folder, name)
           for folder, _, names in os.walk(run / 'checkpoints' / '10' / 'state') for name in names]
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    middle = os.path.getsize(path) // 2
    f.seek(middle)
    flipped = bytes(b ^ 0xFF for b in f.read(16))
    f.seek(middle)
    f.write(flipped)


@pytest.mark.parametrize('corrupt,reason', [
    (lambda run: _edit_meta(run, _no_samplers, False), "meta: no 'samplers'"),
    (lambda run: _edit_meta(run, _two_domains, False),
     'meta.samplers[0].positions_D: shape (2,), expected (3,)'),
    (lambda run: _edit_meta(run, _more_tokens, True), 'the checksum of its JSON part does not match'),
    # Flipped bytes land in a compressed chunk (tensorstore cannot decode it) or decode to other
    # values (the checksum catches them), depending on ocdbt's file layout: both are a bad checkpoint.
    (_flip_bytes_of_largest_array_file, ('the checksum of state array .', 'failed to restore')),
], ids=['meta_key_missing', 'meta_wrong_shape', 'meta_edited', 'array_bytes_flipped'])
def test_bad_latest_checkpoint_falls_back_to_previous_and_ends_as_whole_run(
    whole, tmp_path, capsys, corrupt, reason):
  run = _copy_of(whole, tmp_path)
  corrupt(run)
  printed, trainer = _rerun(run, capsys)
  reports = [line for line in printed if 'checkpoint at step' in line]
  assert len(reports) == 1 and reports[0].startswith('checkpoint at step 10 of '), printed
  reasons = (reason,) if isinstance(reason, str) else reason
  assert any(r in reports[0] for r in reasons) and 'using the previous one' in reports[0], reports
  assert (run / 'corrupt_checkpoint_10').exists()
  assert sorted(int(s) for s in os.listdir(run / 'checkpoints')) == [5, 10]
  _assert_same_as_whole(run, trainer, whole)


@pytest.mark.parametrize('name', ['metrics.jsonl', 'mixer.jsonl'])
def test_torn_last_log_line_is_dropped_with_a_warning(whole, tmp_path, capsys, name):
  run = _copy_of(whole, tmp_path, drop_last_checkpoint=True)
  path = run / name
  text = path.read_text()
  path.write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half the last line
  printed, trainer = _rerun(run, capsys)
  warnings = [line for line in printed if line.startswith('warning:')]
  assert len(warnings) == 1 and f'{path}: line' in warnings[0] and 'cut short' in warnings[0]
  _assert_same_as_whole(run, trainer, whole)


def test_bad_log_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
  with pytest.raises(ValueError, match=rf'{path}: line 2 is not JSON'):
    metrics_lib.read_jsonl(str(path))


def test_metrics_file_deleted_mid_run_or_missing_on_resume_is_warned_about(whole, tmp_path, capsys):
  run = _copy_of(whole, tmp_path, drop_last_checkpoint=True)
  path = run / 'metrics.jsonl'

  def deleting(train_fn):
    def step(state, batch):
      if int(state.step) == 7 and path.exists():
        path.unlink()
      return train_fn(state, batch)
    return step

  printed, _ = _rerun(run, capsys, wrap=deleting)
  warnings = [line for line in printed if line.startswith('warning:')]
  assert len(warnings) == 1 and f'{path} was deleted while the run was writing it' in warnings[0]
  path.unlink()
  printed, _ = _rerun(run, capsys)  # resumes from step 10: nothing to train
  assert printed == [f'warning: {path} is missing, but the run resumes from step 10: its rows of '
                     'steps 1..10 are lost']


def test_checkpoint_written_before_checksums_still_restores(tmp_path):
  state, folder = {'x': jax.numpy.arange(3.0)}, str(tmp_path / 'checkpoints')
  checkpointer = checkpoint_lib.Checkpointer(folder, keep=2)
  checkpointer.save(4, state, {'note': 'old'})
  checkpointer.close()
  path = tmp_path / 'checkpoints' / '4' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  del meta[checkpoint_lib.CHECKSUMS]
  path.write_text(json.dumps(meta))
  checkpointer = checkpoint_lib.Checkpointer(folder, keep=2)
  step, restored, meta = checkpointer.restore_latest(checkpoint_lib.abstract_of(state))
  checkpointer.close()
  assert step == 4 and meta == {'note': 'old'}
  np.testing.assert_array_equal(restored['x'], state['x'])
