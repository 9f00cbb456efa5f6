"""The Mixer baselines: static weights, ODM's bandit, DoReMi's update, RegMix's fit and search."""

import numpy as np
import pytest
import jax.numpy as jnp

from configs import base
from mixing.mixers import doremi
from mixing import mixer as mixer_lib
from mixing.mixers import odm
from mixing.mixers import regmix
from mixing import registry
from mixing.mixers import static

INFOS = [mixer_lib.DomainInfo('a', 100), mixer_lib.DomainInfo('b', 10_000),
         mixer_lib.DomainInfo('c', 1_000_000)]


def _obs(step, loss_D, weights_D, tokens_D=(10.0, 10.0, 10.0)):
  return mixer_lib.Observation(step=step, total_steps=100, tokens_seen=0,
                               train_loss_D=np.asarray(loss_D, float),
                               train_tokens_D=np.asarray(tokens_D, float), eval_metrics={},
                               weights_D=np.asarray(weights_D, float))


def _first_weights(mixer):
  state = mixer.init(INFOS)
  return mixer.update(state, _obs(0, [np.nan] * 3, [1 / 3] * 3))[1]


def test_static_baselines():
  np.testing.assert_allclose(_first_weights(static.uniform()), [1 / 3] * 3)
  np.testing.assert_allclose(_first_weights(static.proportional()),
                             np.array([100, 1e4, 1e6]) / 1010100)
  w = _first_weights(static.SizeBased(temperature=2.0))
  np.testing.assert_allclose(w, np.array([10, 100, 1000]) / 1110)
  capped = _first_weights(static.SizeBased(temperature=1.0, cap=10_000))
  np.testing.assert_allclose(capped, np.array([100, 1e4, 1e4]) / 20100)


def test_static_schedule_switches_by_step():
  mixer = mixer_lib.Static([1, 0, 0], schedule=[(10, [0, 1, 0]), (20, {'c': 1.0})])
  state = mixer.init(INFOS)
  got = [mixer.update(state, _obs(s, [1, 1, 1], [1, 0, 0]))[1].argmax() for s in (0, 9, 10, 25)]
  assert got == [0, 0, 1, 2]


def test_odm_favours_the_domain_with_the_highest_loss_and_explores_less_over_time():
  mixer = odm.ODM(smoothing=0.5)
  state = mixer.init(INFOS)
  weights = np.full(3, 1 / 3)
  first = None
  for t in range(1, 200):
    state, weights = mixer.update(state, _obs(t, [1.0, 5.0, 1.0], weights))
    first = weights if first is None else first
  assert weights[1] > weights[0] + 0.1 and weights[0] == pytest.approx(weights[2])
  assert weights[1] > first[1]  # the preference sharpens as exploration decays
  assert weights.min() >= odm.ODM.exploration(199, 3) - 1e-12
  assert odm.ODM.exploration(1000, 3) < odm.ODM.exploration(10, 3) <= 1 / 3
  # A domain not drawn since the last update keeps its reward estimate.
  before = state['rewards_D'].copy()
  state, _ = mixer.update(state, _obs(200, [np.nan, 5.0, 1.0], weights, tokens_D=(0, 10, 10)))
  assert state['rewards_D'][0] == before[0] and state['rewards_D'][1] != before[1]


def test_doremi_excess_loss_clips_per_token_and_alpha_update():
  batch = {'mask_BxL': jnp.array([[1.0, 1.0], [1.0, 0.0]]), 'domain_B': jnp.array([0, 1])}
  proxy = jnp.array([[2.0, 1.0], [3.0, 9.0]])
  ref = jnp.array([[1.0, 2.0], [1.0, 0.0]])
  lam = doremi.excess_loss_D(proxy, ref, batch, 3)
  np.testing.assert_allclose(lam, [0.5, 2.0, 0.0])  # (1 + 0) / 2, the masked token ignored
  alpha = doremi.update_alpha(jnp.full(3, 1 / 3), lam, eta=1.0, smoothing=1e-3)
  expected = np.exp([0.5, 2.0, 0.0]) / np.exp([0.5, 2.0, 0.0]).sum()
  np.testing.assert_allclose(alpha, 0.999 * expected + 1e-3 / 3, rtol=1e-6)


def test_regmix_fits_and_finds_the_minimum():
  prior = np.array([0.5, 0.3, 0.2])
  x = regmix.sample_mixtures(prior, 256, seed=0)
  np.testing.assert_allclose(x.sum(1), 1.0)
  assert (x >= 0).all() and x.std(0).min() > 0.05  # diverse mixtures
  target = np.array([0.2, 0.2, 0.6])
  y = ((x - target) ** 2).sum(1)
  model = regmix.Regressor(rounds=300).fit(x, y)
  test = regmix.sample_mixtures(prior, 128, seed=1)
  assert regmix.spearman(model.predict(test), ((test - target) ** 2).sum(1)) > 0.9
  best = regmix.search(model, prior, samples=20_000, top_k=50, seed=2)
  assert np.abs(best - target).max() < 0.12


def test_regmix_csv_errors_name_the_problem(tmp_path):
  mix = tmp_path / 'mix.csv'
  mix.write_text('index,train_a,train_b\n1,0.5,0.5\n2,1.0,0.0\n')
  loss = tmp_path / 'loss.csv'
  loss.write_text('index,metric/x\n1,3.0\n3,2.0\n')
  with pytest.raises(ValueError, match='do not match the mixtures'):
    regmix.load_training_set(str(mix), str(loss), 'metric/x')
  with pytest.raises(ValueError, match="target: column 'metric/y' is not in"):
    regmix.load_training_set(str(mix), str(loss), 'metric/y')
  loss.write_text('index,metric/x\n2,3.0\n1,2.0\n')
  names, x, y = regmix.load_training_set(str(mix), str(loss), 'metric/x')
  assert names == ['train_a', 'train_b'] and y.tolist() == [2.0, 3.0]  # matched by index


@pytest.mark.parametrize('name,field,value,message', [
    ('nope', None, None, "mixer.name: unknown mixer 'nope'"),
    ('doremi', 'doremi.eta', 0.0, 'mixer.doremi.eta: must be > 0'),
    ('temperature', 'temperature.temperature', -1.0, 'mixer.temperature.temperature: must be > 0'),
    ('temperature', 'temperature.cap', 0.5, 'mixer.temperature.cap: must be >= 1'),
    ('regmix', 'regmix.num_proxies', 2, 'mixer.regmix.num_proxies: 2 is fewer than the 3'),
    ('odm', 'odm.smoothing', 1.0, 'mixer.odm.smoothing: must be in [0, 1)'),
])
def test_bad_mixer_settings_are_named(name, field, value, message):
  config = base.get_config().mixer
  config.name = name
  if field:
    group, key = field.split('.')
    config[group][key] = value
  with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(')', r'\)')):
    registry.check(config, 3)


def test_doremi_upweights_the_learnable_hard_domain_and_downweights_noise(tmp_path):
  """DoReMi's own sanity check: noise (unlearnable), easy (one repeated letter), copy (learnable,
  harder: words said twice need attention). Defaults eta = 1, s = 1e-3."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from experiments.recipes import proxies  # pylint: disable=g-import-not-at-top
  from experiments.training import runtime  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.domains = 'synthetic/noise,synthetic/easy,synthetic/copy'
  config.batch_size, config.seq_len = 32, 64
  config.mixer.doremi.proxy_steps = 300
  names, _, domains = runtime.load_run_domains(config)
  alpha = proxies.doremi_weights(config, str(tmp_path), np.ones(len(names)), domains)
  noise, easy, copy = alpha
  assert copy > easy > noise, alpha
