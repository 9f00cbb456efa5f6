r"""Benchmarks that print tables (measured in one run; ratios where a comparison is asked).

  python -m experiments.bench                  # every section
  python -m experiments.bench --only=data      # sampler vs training throughput, 1,000 domains
  python -m experiments.bench --only=model     # tokens/s, FLOPs/token and MFU of the LMs
  python -m experiments.bench --only=population  # K=16 proxies: one population vs sequential
  python -m experiments.bench --only=taskpgm   # JSD/PMI potentials for N=1,000 tasks; vs a loop
"""

import importlib

from absl import flags

from experiments import cli

SECTIONS = {'data': 'experiments.bench_data', 'model': 'experiments.bench_model',
            'population': 'experiments.bench_population', 'taskpgm': 'experiments.bench_taskpgm'}

_ONLY = flags.DEFINE_list('only', list(SECTIONS), f'Sections to run, of {", ".join(SECTIONS)}.')


def main(argv):
  del argv
  unknown = [s for s in _ONLY.value if s not in SECTIONS]
  if unknown:
    cli.fail(f'only: unknown section {unknown[0]!r} (known: {", ".join(SECTIONS)})')
  for section in _ONLY.value:
    print(importlib.import_module(SECTIONS[section]).report(), flush=True)
    print()


if __name__ == '__main__':
  cli.run(main)
