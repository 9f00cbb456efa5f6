"""`mixer.name=taskpgm`: TaskPGM's energy-minimizing mixture over the run's domains, run as static.

The tasks are the run's domains; single-domain fine-tunes, potentials and the solve (mixing/taskpgm/)
run in the pipelines layer (experiments/recipes/task_mixtures.py), cached in `mixer.taskpgm.dir`
('' : a folder of the run's workdir).
"""

import numpy as np

from mixing import mixer as mixer_lib
from mixing import registry


@registry.register('taskpgm')
def _build(config, context):
  mixture = registry.needs_stages(context, 'taskpgm').taskpgm_mixture(config.mixer.taskpgm.dir)
  missing = [n for n in context.names if n not in mixture]
  if missing:
    raise ValueError(f'mixer.taskpgm.dir: its mixture has no weight for domain {missing[0]!r}')
  return mixer_lib.Static(np.array([mixture[n] for n in context.names]))
