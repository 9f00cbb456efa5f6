r"""Benchmarks that print tables (measured in one run; ratios where a comparison is asked).

  python -m experiments.bench                  # every section
  python -m experiments.bench --only=data      # sampler vs training throughput, 1,000 domains
  python -m experiments.bench --only=model     # tokens/s, FLOPs/token and MFU of the LMs
  python -m experiments.bench --only=population  # K=16 proxies: one population vs sequential
  python -m experiments.bench --only=taskpgm   # JSD/PMI potentials for N=1,000 tasks; vs a loop
  python -m experiments.bench --only=scale     # 1B Llama step memory (FSDP, remat), compile (scan), decoding
  python -m experiments.bench --only=build     # file-domain builds: MB/s, peak RSS, re-open, 1,000 domains
  python -m experiments.bench --only=choice    # multiple-choice scoring: shared contexts vs full rows
"""

import importlib

from absl import flags

from experiments.training import cli

SECTIONS = {'data': 'experiments.recipes.bench_data', 'model': 'experiments.recipes.bench_model',
            'population': 'experiments.recipes.bench_population', 'taskpgm': 'experiments.recipes.bench_taskpgm',
            'scale': 'experiments.recipes.bench_scale', 'build': 'experiments.recipes.bench_build',
            'choice': 'experiments.recipes.bench_choice'}

_ONLY = flags.DEFINE_list('only', list(SECTIONS), f'Sections to run, of {", ".join(SECTIONS)}.')


def main(argv):
  del argv
  if not _ONLY.value:
    raise ValueError(f'only: give at least one section of {", ".join(SECTIONS)}')
  unknown = [s for s in _ONLY.value if s not in SECTIONS]
  if unknown:
    raise ValueError(f'only: unknown section {unknown[0]!r} (known: {", ".join(SECTIONS)})')
  for section in _ONLY.value:
    print(importlib.import_module(SECTIONS[section]).report(), flush=True)
    print()


def console():
  """The `mixlab-bench` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
