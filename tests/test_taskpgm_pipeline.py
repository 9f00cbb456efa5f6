"""TaskPGM's pipeline on a tiny pool: every stage's outputs, resumption, eval files, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import models
from configs import taskpgm as taskpgm_config
from experiments.recipes import task_mixtures as taskpgm
from experiments.reporting import potentials_figure
from mixing.data import eval_suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tmp_path):
  config = taskpgm_config.get_config()
  t = config.taskpgm
  t.tasks = ('bbh/navigate,bbh/web_of_lies,bbh/boolean_expressions,rephrase/bbh/navigate,'
             'noise/qa')
  t.eval_tasks = 'bbh/navigate,bbh/web_of_lies'
  t.base_root = str(tmp_path / 'base')
  t.base_steps, t.single_task_steps, t.finetune_steps = 3, 3, 3
  t.probes, t.budget = 6, 2
  config.model = models.get_config('tiny')
  config.seq_len, config.batch_size = 64, 8
  config.eval_items = 8
  config.data.num_train, config.data.num_heldout = 40, 12
  return config


def test_pipeline_writes_every_output_and_resumes(tmp_path):
  config = _tiny(tmp_path)
  suite = tmp_path / 'suite.json'
  suite.write_text(json.dumps({'examples': [{'input': f'{i} + 1 =', 'target': str(i + 1)}
                                            for i in range(6)]}))
  config.taskpgm.eval_files = str(suite)
  work = tmp_path / 'w'
  results = taskpgm.run(config, str(work), log=lambda *_: None)
  potentials_figure.write_for(str(work))  # what experiments.taskpgm draws after the pipeline
  assert set(results) == {'base', *taskpgm.METHODS}
  assert set(results['uniform']) == {'bbh/navigate', 'bbh/web_of_lies', 'file/suite', 'average'}
  with np.load(work / 'potentials.npz') as pots:
    assert list(pots['tasks']) == config.taskpgm.tasks.split(',')
    jsd, pmi = pots['jsd'], pots['pmi']
    assert jsd.shape == pmi.shape == (5, 5) and pots['unary'].shape == (5,)
    # The default unary is the validation accuracy gain; the NLL gain is kept beside it.
    np.testing.assert_array_equal(pots['unary'], pots['val_acc_gain'])
    assert pots['val_loss_gain'].shape == (5,) and np.isfinite(pots['val_loss_gain']).all()
    assert ((pots['val_acc_gain'] >= -1) & (pots['val_acc_gain'] <= 1)).all()
    np.testing.assert_allclose(jsd, jsd.T)
    assert (jsd >= 0).all() and (jsd <= np.log(2) + 1e-9).all()
  mixture = json.loads((work / 'mixture.json').read_text())
  assert set(mixture) == set(config.taskpgm.tasks.split(','))
  assert abs(sum(mixture.values()) - 1) < 1e-6
  discrete = json.loads((work / 'mixtures.json').read_text())['discrete']
  assert 1 <= len(discrete['selected']) <= 2 and 0 < discrete['guarantee'] <= 1
  assert (work / 'results.md').read_text().count('\n| ') >= 8
  assert (work / 'potentials.png').exists() and (work / 'potentials.svg').exists()
  stamp = os.path.getmtime(work / 'potentials.npz')
  again = taskpgm.run(config, str(work), log=lambda *_: None)
  assert again == results and os.path.getmtime(work / 'potentials.npz') == stamp


def test_eval_files_errors_name_file_and_line(tmp_path):
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"input": "a", "target": "b"}\n{"input": "c"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'target'"):
    eval_suites.load_eval_file(str(bad))
  bad.write_text('{"input": "a", "target": "b"}\n{"input": \n')
  with pytest.raises(ValueError, match=r'bad.jsonl:2: malformed JSON'):
    eval_suites.load_eval_file(str(bad))
  bbh = tmp_path / 'task.json'
  bbh.write_text('{"examples": [{"input": "x", "target": "y"}, {"input": "z", "target": "w"}]}')
  items = eval_suites.load_eval_file(str(bbh))
  assert [it.target for it in items] == ['y', 'w'] and items[0].prompt == 'Q: x\nA:'
  val, test = eval_suites.split_items(items * 5, 0.5, 0, 'file/task')
  assert len(val) == len(test) == 5


@pytest.mark.parametrize('override,message', [
    ('--config.taskpgm.tasks=bbh/navigate,bbh/nope', "domains: unknown domain 'bbh/nope'"),
    ('--config.taskpgm.lam=-1', 'taskpgm.lam: must be >= 0'),
    ('--config.taskpgm.tau=-0.5', 'taskpgm.tau: must be >= 0'),
    ('--config.taskpgm.budget=0', 'taskpgm.budget: must be an integer >= 1'),
    ('--config.taskpgm.eval_files=/no/such.jsonl', "eval_files: no such file: '/no/such.jsonl'"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, override, message):
  proc = subprocess.run([sys.executable, '-m', 'experiments.taskpgm', '--config=configs/taskpgm.py',
                         f'--workdir={tmp_path}', override], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-1500:]
