"""mixbench: its statistics, the oracle's candidates, its config checks, and the smoke run end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import mixbench as mixbench_config
from experiments.recipes import continual
from experiments.recipes import mixbench
from experiments.recipes import oracle
from experiments.reporting import bench_report
from experiments.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_ci_is_the_student_t_interval():
  mean, half = bench_report.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
  # t(0.975, 4) = 2.7764; sd = sqrt(2.5)
  assert mean == pytest.approx(3.0)
  assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
  assert math.isnan(bench_report.mean_ci([1.0])[1])


def test_paired_difference_uses_the_seedwise_differences():
  a = [1.0, 2.0, 3.0, 4.0, 5.0]
  b = [0.9, 1.8, 2.9, 3.7, 4.9]  # a is above b on every seed by 0.1-0.3: paired CI above 0
  p = bench_report.paired(a, b)
  assert p['mean'] == pytest.approx(0.16)
  assert p['above_zero'] and not p['below_zero']
  # The unpaired intervals overlap completely; only pairing shows the difference.
  (ma, ha), (mb, hb) = bench_report.mean_ci(a), bench_report.mean_ci(b)
  assert ma - ha < mb + hb
  q = bench_report.paired([0.1, -0.1, 0.2, -0.2, 0.0], [0.0] * 5)
  assert not q['above_zero'] and not q['below_zero']


def test_markdown_reports_headroom_and_the_agent_against_each_method():
  seeds = [0, 1, 2, 3, 4]
  up = lambda x: {'balanced': list(x), 'source': list(x), 'target': list(x)}
  results = {
      'seeds': seeds,
      'methods': {'uniform': up([0.10, 0.11, 0.12, 0.10, 0.11]),
                  'best_static': up([0.12, 0.12, 0.13, 0.12, 0.12]),
                  'best_dynamic': up([0.20, 0.21, 0.22, 0.20, 0.21]),
                  'agent': up([0.18, 0.19, 0.20, 0.18, 0.19])},
      'rows': {'unseen': {'uniform': up([0.1] * 5), 'agent': up([0.1, 0.12, 0.11, 0.1, 0.13])}},
      'oracle': {'best_dynamic': 'phases 0.9->0.1', 'best_static': 'static target 0.50',
                 'scores': {'phases 0.9->0.1': [0.2], 'static target 0.50': [0.1]},
                 'tune_seeds': [100]}}
  text = bench_report.markdown(results)
  assert 'meets the 3-SD bar' in text
  assert '| best_static | +0.0720 ± ' in text or 'agent − method' in text
  share = (0.188 - 0.108) / (0.208 - 0.108)
  assert f'{share:.2f}' in text
  assert bench_report.best_baseline(results['methods']) == 'best_static'
  assert '| unseen | +0.1000 ± 0.0000 | +0.1120 ± ' in text and 'agent_plain' not in text
  # With the plain agent beside it: each agent against uniform, and the agent against the plain one.
  results['rows']['unseen']['agent_plain'] = up([0.1, 0.11, 0.1, 0.1, 0.11])
  rows = bench_report.markdown(results).split('## Generalization')[1].splitlines()
  assert rows[2] == ('| setting | uniform | agent | agent_plain | agent − uniform | '
                     'agent_plain − uniform | agent − agent_plain |')
  diff = bench_report.paired([0.1, 0.12, 0.11, 0.1, 0.13], [0.1, 0.11, 0.1, 0.1, 0.11])
  assert rows[4].endswith(f'| {diff["mean"]:+.4f} ± {diff["ci"]:.4f} |')


def test_oracle_candidates_are_schedules_on_the_simplex():
  is_target = np.array([False, False, False, True, True])
  static = oracle.grid_candidates(is_target, 6, grid=3)
  center = static['static target 0.25'][0]
  np.testing.assert_allclose(center, [0.25, 0.25, 0.25, 0.125, 0.125])
  refine = oracle.refine_candidates(center, 6, n=2, concentration=3.0, seed=0)
  static.update(refine)
  split = np.array([0.5, 0.3, 0.2, 0.9, 0.1])
  dynamic = oracle.dynamic_candidates(is_target, 6, 0.5, levels=(0.2, 0.8), split_D=split)
  assert len(static) == 5 and len(dynamic) == 2 + 4 + 4
  for w in list(static.values()) + list(dynamic.values()):
    assert w.shape == (6, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0)
  for w in static.values():
    np.testing.assert_allclose(w, w[:1].repeat(6, 0))  # static: the same at every step
  w = dynamic['phases 0.2->0.8']
  np.testing.assert_allclose(w[:, is_target].sum(-1), [0.2] * 3 + [0.8] * 3)
  np.testing.assert_allclose(w[0, 3:] / w[0, 3:].sum(), [0.9, 0.1])  # the groups split as `split`
  assert oracle.best({'a': [1.0, 3.0], 'b': [2.5, 2.4]}, ['a', 'b']) == 'b'


def test_config_checks_name_the_field():
  config = mixbench_config.get_config('smoke')
  mixbench.check(config, ['uniform', 'agent'])
  with pytest.raises(ValueError, match='methods: unknown'):
    mixbench.check(config, ['uniform', 'bogus'])
  bad = mixbench_config.get_config('smoke')
  bad.mixbench.tune_seeds = '0'
  with pytest.raises(ValueError, match='mixbench.tune_seeds: 0 is also a reported seed'):
    mixbench.check(bad, ['uniform'])
  with pytest.raises(ValueError, match="mixbench.rows.x: unknown config field 'continual.nope'"):
    continual.overrides(config, 'continual.nope=1', 'mixbench.rows.x')
  bad = mixbench_config.get_config('smoke')
  bad.choices.metric = 'f1'
  with pytest.raises(ValueError, match="choices.metric: expected one of acc, acc_norm, prob, got 'f1'"):
    mixbench.check(bad, ['uniform'])
  cfg = continual.overrides(config, 'continual.targets=math/hard|continual.reweights=7', 'f')
  assert cfg.domains.endswith(',math/hard') and cfg.steps == 7 * cfg.continual.steps_per_reweight


def test_agents_are_keyed_by_their_section_and_other_settings(tmp_path):
  """A finished workdir may take another agent section or other `trajectories.settings`: each
  agent's folder, tuning and runs are keyed by them, so nothing of another agent is reused."""
  config = mixbench_config.get_config('smoke')
  assert config.trajectories.settings
  key = lambda cfg, method='agent': mixbench.Bench(cfg, str(tmp_path))._key(method)
  plain = key(config, 'agent_plain')
  assert key(config).startswith('agent+') and plain.startswith('agent+') and key(config) != plain
  assert mixbench.Bench(config, str(tmp_path)).agent_base('agent_plain')[0].trajectories.settings == ''
  others = {'trajectories.settings': 'continual.sources=math/easy|continual.targets=prose/poems',
            'trajectories.settings_num': 16, 'agent.gamma': 0.5, 'agent.drop_features': 'weight',
            'agent.group_shares': not config.agent.group_shares}
  for field, value in others.items():
    other = continual.with_overrides(config, {field: value})
    assert key(other) not in (key(config), plain), field
    assert workdir_lib.differences(mixbench.setting_config(config).to_dict(),
                                   mixbench.setting_config(other).to_dict(),
                                   mixbench.AGENT_FIELDS) == []
  other = continual.with_overrides(config, mixbench.PLAIN)  # every addition off
  assert key(other) == key(other, 'agent_plain') == plain
  other = continual.with_overrides(other, {'agent.group_shares': True})  # an addition: not plain
  assert key(other) != key(other, 'agent_plain') == plain
  assert not mixbench.Bench(other, str(tmp_path)).agent_base('agent_plain')[0].agent.group_shares
  other = continual.with_overrides(config, {'mixbench.oracle.grid': 3})  # anything else is refused
  assert workdir_lib.differences(mixbench.setting_config(config).to_dict(),
                                 mixbench.setting_config(other).to_dict(),
                                 mixbench.AGENT_FIELDS) == ['mixbench.oracle.grid']


def _mixbench(workdir, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.mixbench', f'--workdir={workdir}',
                         f'--config={ROOT}/configs/mixbench.py:smoke',
                         f'--config.continual.base_root={workdir}_base', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def test_smoke_run_writes_results_with_every_seed_and_resumes(tmp_path):
  w = str(tmp_path / 'bench')
  out = _mixbench(w)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(w, 'results.json')) as f:
    results = json.load(f)
  assert results['seeds'] == [0, 1]
  assert set(results['methods']) == set(mixbench.METHODS)
  for scores in list(results['methods'].values()) + list(results['rows']['unseen_space'].values()):
    assert all(len(scores[k]) == 2 and all(map(math.isfinite, scores[k]))
               for k in ('balanced', 'source', 'target'))
  # Uniform is what its name says; the oracle's best static is constant; seeds differ.
  uniform = np.array(results['weights']['uniform'])
  np.testing.assert_allclose(uniform, 1.0 / uniform.shape[-1])
  assert results['methods']['uniform']['balanced'][0] != results['methods']['uniform']['balanced'][1]
  for name in ('results.md', 'source_vs_target.png', 'weights.png', 'agent_analysis.png'):
    assert os.path.exists(os.path.join(w, name)), name
  snr = results['metric_snr']  # what chose choices.metric: every candidate under every metric
  assert snr['chosen'] == 'prob' and set(snr['tables']) == {'acc', 'acc_norm', 'prob', 'loss'}
  assert {len(t) for t in snr['tables'].values()} == {len(results['oracle']['scores'])}
  assert 'signal / noise' in open(os.path.join(w, 'results.md')).read()
  from mixing.agent import deploy  # pylint: disable=g-import-not-at-top
  agent_dir = os.path.join(w, 'agents', '00' + mixbench.Bench(
      mixbench_config.get_config('smoke'), w)._key('agent_plain')[len('agent'):])
  assert deploy.load_agent(agent_dir)[1]['choice_metric'] == 'prob'
  # Deployed where the feedback is another metric: one line, exit 2, before anything trains.
  other = _mixbench(str(tmp_path / 'other'), f'--agent_dir={agent_dir}',
                    '--config.choices.metric=acc_norm')
  assert other.returncode == 2 and "trained on choices.metric='prob'" in other.stderr
  assert 'Traceback' not in other.stderr
  with open(os.path.join(w, 'tuning', 'odm.json')) as f:
    assert len(json.load(f)['scores']) == 2  # ODM tuned on the tuning seed
  # A re-run trains nothing and prints the same table.
  again = _mixbench(w)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'chunk' not in again.stdout and 'BC + CQL' in again.stdout
  with open(os.path.join(w, 'results.json')) as f:
    assert json.load(f)['methods'] == results['methods']
  # Other reported seeds extend the same workdir: only the methods run on them (no oracle, no agent).
  more = _mixbench(w, '--config.mixbench.seeds=0,1,2', '--methods=uniform,agent', '--norows')
  assert more.returncode == 0, more.stderr[-3000:]
  trained = [line.split(': chunk')[0] for line in more.stdout.splitlines() if ': chunk' in line]
  assert trained == ['uniform', 'agent'], trained
  with open(os.path.join(w, 'results.json')) as f:
    extended = json.load(f)
  assert extended['seeds'] == [0, 1, 2] and len(extended['methods']['agent']['balanced']) == 3


def test_bad_input_is_one_line_and_exit_2(tmp_path):
  out = _mixbench(str(tmp_path / 'b'), '--methods=uniform,bogus')
  assert out.returncode == 2
  assert 'methods: unknown' in out.stderr and 'Traceback' not in out.stderr
  out = _mixbench(str(tmp_path / 'c'), '--config.mixbench.seeds=0,x')
  assert out.returncode == 2 and 'mixbench.seeds' in out.stderr


def test_odm_time_scale_lets_it_leave_uniform_within_a_short_run():
  from mixing import mixer as mixer_lib  # pylint: disable=g-import-not-at-top
  from mixing.mixers import odm  # pylint: disable=g-import-not-at-top
  d = 10
  obs = mixer_lib.Observation(step=10, total_steps=100, tokens_seen=0,
                              train_loss_D=np.linspace(1.0, 3.0, d), train_tokens_D=np.ones(d),
                              eval_metrics={}, weights_D=np.full(d, 1.0 / d))
  paper = odm.ODM(0.0)
  _, w = paper.update(paper.init([None] * d), obs)
  np.testing.assert_allclose(w, 1.0 / d)  # eps_t = 1/K at t = 10: exactly uniform
  fast = odm.ODM(0.0, step_scale=4.0, time_scale=100.0)
  _, w = fast.update(fast.init([None] * d), obs)
  assert w.argmax() == d - 1 and w.max() > 1.5 / d  # the highest loss gets the most weight
  with pytest.raises(ValueError, match='mixer.odm.time_scale'):
    odm.ODM(0.9, time_scale=0.0)


def test_scores_average_accuracy_into_both_fields():
  from mixing.agent import features  # pylint: disable=g-import-not-at-top
  loss = np.array([1.0, 1.0, 2.0, 2.0])
  base = np.array([1.0, 1.0, 2.5, 2.5])
  is_s, is_t = np.array([1.0, 1.0, 0, 0]), np.array([0, 0, 1.0, 1.0])
  no_acc = features.score_arrays(loss, base, np.full(4, np.nan), np.full(4, np.nan), is_s, is_t)
  assert no_acc['source'] == 0.0 and no_acc['target'] == pytest.approx(0.2)
  acc = features.score_arrays(loss, base, np.array([0.3, 0.5, 0.6, 0.4]),
                              np.array([0.5, 0.5, 0.5, 0.5]), is_s, is_t)
  assert acc['source'] == pytest.approx(0.5 * (0.0 - 0.1))  # loss unchanged, accuracy -0.1
  assert acc['target'] == pytest.approx(0.5 * (0.2 + 0.0))
  assert acc['balanced'] == pytest.approx(0.5 * (acc['source'] + acc['target']))


def test_accuracy_reads_the_configured_choice_metric():
  from experiments.recipes import closed_loop  # pylint: disable=g-import-not-at-top
  m = {'eval/a/b/choice_acc': 0.25, 'eval/a/b/choice_acc_norm': 0.5, 'eval/a/b/choice_prob': 0.4,
       'eval/c/choice_prob': 0.3}
  assert closed_loop.accuracy_metrics(m) == {'eval/a/b/accuracy': 0.5}
  assert closed_loop.accuracy_metrics(m, 'prob') == {'eval/a/b/accuracy': 0.4,
                                                     'eval/c/accuracy': 0.3}
  config = mixbench_config.get_config('smoke')
  assert closed_loop.choice_metric(config) == 'prob'
  closed_loop.check_agent_metric(config, {'choice_metric': 'prob'}, 'A')
  with pytest.raises(ValueError, match="agent_dir: 'A' was trained on choices.metric='acc_norm'"):
    closed_loop.check_agent_metric(config, {}, 'A')  # an agent saved before the field
  del config.choices['metric']  # a config from before the field: lm-eval-harness's acc_norm
  assert closed_loop.choice_metric(config) == 'acc_norm'
  closed_loop.check_agent_metric(config, {}, 'A')


def test_signal_noise_separates_candidates_from_seed_noise():
  table = np.array([[1.0, 2.0], [3.0, 4.0]]) + np.array([[0.1, -0.1], [-0.1, 0.1]])
  r = bench_report.signal_noise(table)
  assert r['signal'] == pytest.approx(math.sqrt(2.0))  # candidate means 1.5 and 3.5
  assert r['noise'] == pytest.approx(0.2)  # the seed effect (+1) is not noise; the +-0.1 is
  assert r['snr'] == pytest.approx(math.sqrt(2.0) / 0.2)


def test_metric_tables_score_each_candidate_under_each_metric():
  base = {'eval/s/loss': 2.0, 'eval/t/loss': 4.0, 'eval/s/choice_prob': 0.5,
          'eval/t/choice_prob': 0.25, 'eval/s/choice_acc': 0.5, 'eval/t/choice_acc': 0.5}
  run = lambda ls, lt, ps, pt: {'eval/s/loss': ls, 'eval/t/loss': lt, 'eval/s/choice_prob': ps,
                                'eval/t/choice_prob': pt, 'eval/s/choice_acc': 0.5,
                                'eval/t/choice_acc': 0.5}
  runs = {'b': {1: run(2.0, 2.0, 0.5, 0.75), 0: run(1.0, 4.0, 0.5, 0.25)},
          'a': {0: run(2.0, 4.0, 0.5, 0.25), 1: run(2.0, 4.0, 0.5, 0.25)},
          'partial': {0: run(2.0, 4.0, 0.5, 0.25)}}  # not on every seed: left out
  t = oracle.metric_tables(runs, base, ['s', 't'], np.array([1.0, 0.0]), np.array([0.0, 1.0]),
                           0.5, ('acc', 'prob'))
  assert set(t) == {'acc', 'prob', 'loss'}
  assert t['loss'] == [[0.0, 0.0], [0.25, 0.25]]  # rows: a, b; columns: seeds 0, 1
  # b on seed 1: target loss halved (+0.5) and prob +0.5 -> target 0.5, balanced 0.25.
  np.testing.assert_allclose(t['prob'], [[0.0, 0.0], [0.125, 0.25]])
  np.testing.assert_allclose(t['acc'], [[0.0, 0.0], [0.125, 0.125]])
  del runs['a'][0]['eval/s/choice_prob']  # a run from before choice_prob: no 'prob' row at all
  assert set(oracle.metric_tables(runs, base, ['s', 't'], np.array([1.0, 0.0]),
                                  np.array([0.0, 1.0]), 0.5, ('acc', 'prob'))) == {'acc', 'loss'}
