"""Proxy populations: each member equals the same model trained alone; checkpoints resume."""

import jax
import numpy as np

from configs import tiny
from experiments.training import population as population_lib
from experiments.recipes import runs
from experiments.training import trainer as trainer_lib


def _config(steps=6):
  config = tiny.get_config()
  config.steps, config.eval_every, config.checkpoint_every = steps, 100, 3
  return config


def test_each_member_equals_the_same_model_trained_alone(tmp_path):
  config = _config()
  weights = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 1.0]])
  seeds = [3, 4, 5]
  pop = population_lib.Population(config, str(tmp_path / 'pop'), weights, seeds, quiet=True)
  loss_KxD = pop.run()
  assert loss_KxD.shape == (3, 3) and np.isfinite(loss_KxD).all()
  for k in range(3):
    alone = _config()
    alone.seed = seeds[k]
    alone.domains = ','.join(f'{n}:{w}' for n, w in zip(pop.names, weights[k]))
    trainer = runs.make_trainer(alone, str(tmp_path / f'alone{k}'), quiet=True)
    trainer.run()
    for a, b in zip(jax.tree.leaves(pop.params(k)), jax.tree.leaves(trainer.state.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    alone_loss = [trainer.last_eval[f'eval/{n}/loss'] for n in pop.names]
    np.testing.assert_allclose(loss_KxD[k], alone_loss, rtol=1e-4)
  # Members differ: their mixtures differ.
  assert not np.allclose(loss_KxD[0], loss_KxD[1])


def test_population_resumes_from_its_checkpoint(tmp_path):
  weights = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 2.0]])
  whole = population_lib.Population(_config(), str(tmp_path / 'whole'), weights, quiet=True)
  whole.run()
  half = _config(steps=3)
  population_lib.Population(half, str(tmp_path / 'split'), weights, quiet=True).run()
  resumed = population_lib.Population(_config(), str(tmp_path / 'split'), weights, quiet=True)
  resumed.run()
  assert resumed.step == 6
  for a, b in zip(jax.tree.leaves(whole.state.params), jax.tree.leaves(resumed.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
