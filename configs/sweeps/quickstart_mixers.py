"""Static vs temperature vs online (ODM) mixing of the quickstart domains, two seeds: 6 runs.

  python -m experiments.sweep --sweep=configs/sweeps/quickstart_mixers.py --workers=2
About 3-4 minutes with 2 workers on 2 CPU cores; results in /tmp/mixlab_sweeps/quickstart_mixers.
"""

import ml_collections


def get_sweep():
  sweep = ml_collections.ConfigDict()
  sweep.config = 'configs/quickstart.py'  # the base experiment config of every run
  sweep.kind = 'grid'  # every combination of the values below (3 x 2 = 6 runs)
  # dotted config field -> the values it takes
  sweep.params = ml_collections.ConfigDict(allow_dotted_keys=True)
  # uniform static weights; temperature-scaled token counts (T=2); ODM's EXP3 online re-weighting
  sweep.params['mixer.name'] = ['static', 'temperature', 'odm']
  sweep.params['seed'] = [0, 1]  # model init and sampler draws
  # dotted config field -> one value, the same in every run
  sweep.overrides = ml_collections.ConfigDict(allow_dotted_keys=True)
  sweep.overrides['steps'] = 150  # half the quickstart's 300, to keep the sweep to a few minutes
  sweep.overrides['eval_every'] = 50  # three evaluations per run
  sweep.overrides['checkpoint_every'] = 50  # an interrupted run loses at most 50 steps
  sweep.overrides['mixer.update_every'] = 25  # odm re-weights 5 times in 150 steps
  return sweep
