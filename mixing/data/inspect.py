r"""Shows what a model will read: each domain's size and a few decoded training sequences.

  python -m mixing.data.inspect --domains=code/python,prose/plays,math/easy,bbh/navigate
  python -m mixing.data.inspect --domain=gsm8k=../shared/data/gsm8k/train.jsonl@question,answer
  python -m mixing.data.inspect --domain='web=/data/web/**/*.jsonl.zst' --data_dir=/tmp/built

A `--domain=NAME=GLOB[@field|@input,target][:weight]` is built into --data_dir (streaming, cached:
a second run opens it without reading the files) and added to --domains.
"""

import time

from absl import flags
import numpy as np

from experiments.training import cli  # the one error path of every CLI (pyproject: ignore_imports)
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib
from mixing.data import tokenizer

_DOMAINS = flags.DEFINE_string('domains', 'code/python,prose/plays,math/easy,bbh/navigate',
                               "Comma-separated domains, optionally 'name:weight' ('' with --domain: "
                               'only those).')
_DATA_DIR = flags.DEFINE_string('data_dir', '/tmp/mixlab_data', 'Where file domains are built and '
                                'cached (a local path or gs://...).')
_SEQ_LEN = flags.DEFINE_integer('seq_len', 128, 'Tokens per training sequence.')
_EXAMPLES = flags.DEFINE_integer('examples', 2, 'Decoded sequences to show per domain.')
_SEED = flags.DEFINE_integer('seed', 0, 'Data seed.')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Processes building file domains (0: one per core).')
_TOKENIZER = flags.DEFINE_string('tokenizer', 'bytes', "'bytes', a tokenizer.json (or its folder) or a "
                                 'SentencePiece .model.')


def describe(packed_domains, examples: int, seed: int) -> str:
  lines = [f'tokenizer: {packed_domains[0].tokenizer}' if packed_domains else 'no domains',
           f"{'domain':<32} {'train docs':>10} {'heldout':>8} {'rows':>8} {'loss tokens':>12} "
           f"{'eval items':>10}"]
  for p in packed_domains:
    lines.append(f'{p.name:<32} {len(p.domain.train):>10,} {len(p.domain.heldout):>8,} '
                 f'{len(p.train):>8,} {p.train.num_tokens:>12,} {len(p.domain.items):>10,}')
  for p in packed_domains:
    if hasattr(p.train, 'folder'):  # a built file domain
      size = (p.train.nbytes + p.heldout.nbytes) / 2**20
      lines.append(f'{p.name}: built in {p.train.folder} ({size:,.1f} MB of shards)')
  names = [p.name for p in packed_domains]
  for d, p in enumerate(packed_domains):
    one_hot = np.eye(len(names))[d]
    sampler = sampler_lib.MixtureSampler([q.train for q in packed_domains], names, one_hot,
                                         examples, seed=seed)
    batch = sampler.next_batch()
    lines.append(f'\n=== {p.name} ===')
    for inputs, mask in zip(batch['inputs_BxL'], batch['mask_BxL']):
      lines.append(f'--- sequence ({int(mask.sum())}/{mask.size} targets count) ---')
      lines.append(p.tokenizer.decode(inputs, stop_at_eos=False))
    if p.domain.items:
      item = p.domain.items[0]
      lines.append(f'--- evaluation item ---\n{item.prompt}\n[target] '
                   f'{item.target!r}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _SEQ_LEN.value < 1:
    raise ValueError(f'seq_len: must be positive, got {_SEQ_LEN.value}')
  for flag in (_EXAMPLES, _SEED, _WORKERS):
    if flag.value < 0:
      raise ValueError(f'{flag.name}: must be >= 0, got {flag.value}')
  given = flags.FLAGS['domains'].present
  mixture, files = load_lib.merge_domain_flags(
      _DOMAINS.value if given or not cli.DOMAIN.value else '', cli.DOMAIN.value)
  for name, spec in files.items():
    load_lib.check_file_spec(name, spec)
  if files:
    cli.check_writable('data_dir', _DATA_DIR.value)
  names, _ = load_lib.parse_mixture(mixture)
  start = time.time()
  packed = load_lib.load_domains(names, _SEQ_LEN.value, _SEED.value, files=files,
                                 data_dir=_DATA_DIR.value, tok=tokenizer.load(_TOKENIZER.value),
                                 workers=_WORKERS.value)
  print(f'loaded {len(packed)} domains in {time.time() - start:.2f} s')
  print(describe(packed, _EXAMPLES.value, _SEED.value))


def console():
  """The `mixlab-inspect` command."""
  cli.run(main, reads_domains=True)


if __name__ == '__main__':
  console()
