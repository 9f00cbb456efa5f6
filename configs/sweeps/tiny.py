"""The tests' sweep: 4 tiny runs (2 mixers x 2 learning rates), a few seconds of training apiece.

  python -m experiments.sweep --sweep=configs/sweeps/tiny.py --workers=2
"""

import ml_collections


def get_sweep():
  sweep = ml_collections.ConfigDict()
  sweep.config = 'configs/tiny.py'  # the base experiment config of every run
  sweep.kind = 'grid'  # every combination of the values below (2 x 2 = 4 runs)
  # dotted config field -> the values it takes
  sweep.params = ml_collections.ConfigDict(allow_dotted_keys=True)
  sweep.params['mixer.name'] = ['static', 'temperature']  # equal weights vs n_d^(1/T) weights
  sweep.params['optimizer.learning_rate'] = [3e-3, 1e-2]  # peak AdamW learning rate
  # dotted config field -> one value, the same in every run
  sweep.overrides = ml_collections.ConfigDict(allow_dotted_keys=True)
  sweep.overrides['steps'] = 10  # half of tiny.py's 20
  sweep.overrides['eval_every'] = 5  # two evaluations
  return sweep
