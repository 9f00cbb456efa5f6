"""TaskPGM's pipeline on a tiny pool: every stage's outputs, resumption, eval files, bad input."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import models
from configs import taskpgm as taskpgm_config
from experiments.recipes import taskpgm_seeds as seeds_lib
from experiments.reporting import taskpgm_report
from mixing.data import choices
from mixing.data import domains
from mixing.data import eval_suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tmp_path, seeds='0'):
  config = taskpgm_config.get_config()
  t = config.taskpgm
  t.tasks = ('bbh/navigate,bbh/web_of_lies,bbh/boolean_expressions,rephrase/bbh/navigate,'
             'noise/qa')
  t.eval_tasks = 'bbh/navigate,bbh/web_of_lies'
  t.base_root = str(tmp_path / 'base')
  t.base_steps, t.single_task_steps, t.finetune_steps = 3, 3, 3
  t.probes, t.budget, t.em_items = 6, 2, 2
  t.seeds, t.families = seeds, 'tiny'
  t.family_models = ml_collections.ConfigDict({'tiny': models.get_config('tiny')})
  t.select.lam = '0.5,2.0'
  t.select.unary, t.select.tau = 'val_choice', '0.1'
  config.seq_len, config.batch_size = 64, 8
  config.eval_items = 8
  config.data.num_train, config.data.num_heldout = 40, 12
  return config


def test_pipeline_over_seeds_writes_every_output_and_resumes(tmp_path):
  config = _tiny(tmp_path, seeds='0,1')
  suite = tmp_path / 'suite.json'
  suite.write_text(json.dumps({'examples': [{'input': f'{i} + 1 =', 'target': str(i + 1)}
                                            for i in range(6)]}))
  config.taskpgm.eval_files = str(suite)
  work = tmp_path / 'w'
  results = seeds_lib.run(config, str(work), log=lambda *_: None)
  written = taskpgm_report.write(str(work), results)
  assert results['seeds'] == [0, 1] and list(results['families']) == ['tiny']
  family = results['families']['tiny']
  assert json.loads((work / 'results.json').read_text()) == results
  assert json.loads((work / 'tiny' / 'results.json').read_text()) == family
  suites = {'bbh/navigate', 'bbh/web_of_lies', 'file/suite', 'average'}
  for key in ('methods', 'exact_match'):
    assert list(family[key]) == list(seeds_lib.REPORTED)
    for method, table in family[key].items():
      assert set(table) == suites and all(len(v) == 2 for v in table.values()), method
      assert all(0 <= x <= 1 for v in table.values() for x in v)
  grid = seeds_lib.candidates(config.taskpgm)
  assert len(grid) == 4  # 1 unary x 2 redundancies x 2 lams x 1 tau
  for seed in (0, 1):
    run = work / 'tiny' / f'seed_{seed}'
    select = json.loads((run / 'select.json').read_text())
    # The chosen candidate is the first best on the validation parts.
    assert select['chosen'] == grid[int(np.argmax(select['validation']))]
    assert family['chosen'][seed] == select['chosen']
    scores = json.loads((run / 'scores.json').read_text())
    weights = scores['weights']
    for method in seeds_lib.REPORTED[1:]:
      assert abs(sum(weights[method].values()) - 1) < 1e-6, method
    # Pool sizes differ by design (size_spread): size-proportional is not uniform.
    assert np.ptp(list(weights['size-proportional'].values())) > 0.05
    with np.load(run / 'potentials.npz') as pots:
      assert list(pots['tasks']) == config.taskpgm.tasks.split(',')
      jsd = pots['jsd']
      assert jsd.shape == pots['pmi'].shape == (5, 5)
      np.testing.assert_array_equal(pots['unary'], pots['val_choice_gain'])
      assert np.isnan(pots['val_acc_gain']).all()  # exact-match gains only when asked for
      assert ((pots['val_choice_gain'] >= -1) & (pots['val_choice_gain'] <= 1)).all()
      np.testing.assert_allclose(jsd, jsd.T)
      assert (jsd >= 0).all() and (jsd <= np.log(2) + 1e-9).all()
    d = scores['discrete']
    assert 1 <= len(d['selected']) <= 2 and 0 < d['guarantee'] <= 1
    assert d['value'] <= d['exhaustive_value'] + 1e-12  # C(5, 2) subsets: exhaustive search ran
    assert d['value'] >= d['guarantee'] * d['exhaustive_value'] - 1e-12 or not d['applies']
  text = (work / 'results.md').read_text()
  # Two accuracy tables with their per-suite details, and the mixtures table.
  assert text.count('| taskpgm |') == 5 and '± ' in text and '− uniform' in text
  # Uniform puts 3/5 of its weight on the pool's 3 tasks that are not suites, over 5 tasks.
  assert '| uniform | 0.60 | 5.0 |' in text
  assert (work / 'tiny' / 'potentials.png').exists() and str(work / 'results.md') in written
  stamp = os.path.getmtime(work / 'tiny' / 'seed_0' / 'potentials.npz')
  again = seeds_lib.run(config, str(work), log=lambda *_: None)
  assert again == results
  assert os.path.getmtime(work / 'tiny' / 'seed_0' / 'potentials.npz') == stamp


def test_train_docs_spread_sizes_by_name():
  config = taskpgm_config.get_config()
  tasks = config.taskpgm.tasks.split(',')
  docs = seeds_lib.train_docs(config, tasks)
  assert len(tasks) >= 30 and set(docs) == set(tasks)
  assert all(config.data.num_train / 20 - 1 <= n <= config.data.num_train for n in docs.values())
  assert max(docs.values()) / min(docs.values()) > 5
  config.taskpgm.size_spread = 1.0
  assert set(seeds_lib.train_docs(config, tasks).values()) == {config.data.num_train}


def test_config_variants_name_built_in_tasks_and_their_own_seeds():
  default = taskpgm_config.get_config().taskpgm
  seeds = {}
  for variant in ('',) + taskpgm_config.VARIANTS:
    t = taskpgm_config.get_config(variant).taskpgm
    tasks = t.tasks.split(',')
    for task in tasks:
      domains.check_builtin_name(task)
    assert len(set(tasks)) == len(tasks) and set(t.eval_tasks.split(',')) <= set(tasks), variant
    seeds[variant] = set(t.seeds.split(','))
  assert len(taskpgm_config.get_config('n100').taskpgm.tasks.split(',')) == 100
  skewed = taskpgm_config.get_config('skewed').taskpgm
  assert skewed.tasks.count('skewed/bbh/') == 6 and skewed.eval_tasks == default.eval_tasks
  learnable = taskpgm_config.get_config('learnable').taskpgm
  assert learnable.tasks == default.tasks and len(learnable.eval_tasks.split(',')) == 6
  short = taskpgm_config.get_config('short').taskpgm
  assert short.eval_tasks == learnable.eval_tasks and short.finetune_steps < default.finetune_steps
  precise = taskpgm_config.get_config('precise')  # :short on 4x the items, the potentials' read kept
  assert (precise.taskpgm.eval_tasks, precise.taskpgm.finetune_steps) == (
      short.eval_tasks, short.finetune_steps)
  items = taskpgm_config.get_config().eval_items
  assert precise.eval_items == precise.data.num_heldout == 4 * items
  assert precise.taskpgm.unary_items == items // 2
  precise10 = taskpgm_config.get_config('precise10')
  assert len(precise10.taskpgm.seeds.split(',')) == 10
  precise10.taskpgm.seeds = precise.taskpgm.seeds
  assert precise10.to_dict() == precise.to_dict()  # only the seeds differ
  # Each reported variant has seeds of its own (n100 is one development-style seed).
  reported = [v for v in seeds if v != 'n100']
  for a in reported:
    for b in reported:
      assert a == b or not seeds[a] & seeds[b], (a, b)
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    taskpgm_config.get_config('nope')


def test_choice_items_from_a_suite():
  items = [(f'Q{i}', a) for i, a in enumerate(['Yes', 'No', 'Yes', 'No'])]
  labels = choices.build_items([('yn', items, [a for _, a in items])], seq_len=32, seed=0)
  assert labels.num_items == 4 and labels.options_I().tolist() == [2] * 4
  first = labels.option_N == 0
  texts = [bytes(r[r > 0][-3:].tolist()) for r in labels.tokens_NxL1[first]]
  assert [t.strip() for t in texts] == [b'Yes', b'No', b'Yes', b'No']
  open_ended = [(f'Sort {i}', f'w{i}') for i in range(10)]
  many = choices.build_items([('sort', open_ended, [a for _, a in open_ended])], 32, 0, 4)
  assert many.options_I().tolist() == [4] * 10
  again = choices.build_items([('sort', open_ended, [a for _, a in open_ended])], 32, 0, 4)
  np.testing.assert_array_equal(many.tokens_NxL1, again.tokens_NxL1)
  with pytest.raises(ValueError, match="suite 'one'"):
    choices.build_items([('one', [('Q', 'A')], ['A'])], 32, 0)


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
    ('--config.taskpgm.seeds=0,x', 'taskpgm.seeds: a comma-separated list'),
    ('--config.taskpgm.families=quickstart,llama', "taskpgm.families: 'llama' has no model"),
    ('--config.taskpgm.select.unary=val_choice,vibes', "taskpgm.select.unary: one of"),
    ('--config.taskpgm.select.lam=1,-2', 'taskpgm.select: lam and tau must be finite and >= 0'),
])
def test_bad_input_exits_2_with_one_line(tmp_path, override, message):
  proc = subprocess.run([sys.executable, '-m', 'experiments.taskpgm', '--config=configs/taskpgm.py',
                         f'--workdir={tmp_path}', override], cwd=ROOT, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-1500:]


def test_mixtures_table_counts_the_weight_on_relabeled_copies(tmp_path):
  weights = {'uniform': {'bbh/navigate': 0.25, 'noise/qa': 0.25, 'skewed/bbh/navigate': 0.25,
                         'mislabeled/bbh/navigate': 0.25},
             'taskpgm': {'bbh/navigate': 0.7, 'noise/qa': 0.2, 'skewed/bbh/navigate': 0.1,
                         'mislabeled/bbh/navigate': 0.0}}
  for seed in (0, 1):
    (tmp_path / 'f' / f'seed_{seed}').mkdir(parents=True)
    (tmp_path / 'f' / f'seed_{seed}' / 'scores.json').write_text(json.dumps({'weights': weights}))
  lines = taskpgm_report._mixtures(str(tmp_path), 'f', [0, 1], ['bbh/navigate'],  # pylint: disable=protected-access
                                   ['uniform', 'taskpgm'])
  assert 'weight on relabeled copies' in lines[2]
  assert lines[4:6] == ['| uniform | 0.75 | 0.50 | 4.0 |', '| taskpgm | 0.30 | 0.10 | 2.2 |']
  del weights['uniform']['skewed/bbh/navigate'], weights['uniform']['mislabeled/bbh/navigate']
  for seed in (0, 1):
    (tmp_path / 'f' / f'seed_{seed}' / 'scores.json').write_text(json.dumps({'weights': weights}))
  assert 'relabeled' not in taskpgm_report._mixtures(  # pylint: disable=protected-access
      str(tmp_path), 'f', [0, 1], ['bbh/navigate'], ['uniform'])[2]
