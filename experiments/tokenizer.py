r"""Tokenizer tools: train a byte-level BPE on domains, or show how a tokenizer splits text.

  python -m experiments.tokenizer train --domains=code/python,prose/plays,math/easy \
      --vocab_size=2048 --out=/tmp/bpe2k
  python -m experiments.tokenizer show --tokenizer=/tmp/bpe2k --text='def f(x): return x'

`train` reads the domains' training documents (built-in names, or file domains with
--domain=NAME=GLOB[@field|@input,target], streamed from the files) and writes OUT/tokenizer.json and
OUT/tokenizer_config.json; a run uses it with --config.tokenizer=OUT.
"""

from absl import flags

from experiments.training import cli
from mixing.data import bpe
from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from mixing.data import tokenizer

_DOMAINS = flags.DEFINE_string('domains', 'code/python,prose/plays,math/easy',
                               'train: comma-separated domains whose training documents are read (--domain adds file domains).')
_VOCAB = flags.DEFINE_integer('vocab_size', 2048, 'train: vocabulary size, specials included.')
_MIN_FREQ = flags.DEFINE_integer('min_frequency', 2, 'train: fewest occurrences of a merged pair.')
_OUT = flags.DEFINE_string('out', '', 'train: the folder to write.')
_SEED = flags.DEFINE_integer('seed', 0, 'train: data seed (generated domains, held-out split).')
_TOKENIZER = flags.DEFINE_string('tokenizer', 'bytes', 'show: the tokenizer to use.')
_TEXT = flags.DEFINE_string('text', 'Hello, world!', 'show: the text to tokenize.')


def train() -> str:
  if not _OUT.value:
    raise ValueError("out: required (the folder to write), got ''")
  cli.check_writable('out', _OUT.value)
  mixture, files = load_lib.merge_domain_flags(_DOMAINS.value, cli.DOMAIN.value)
  names, _ = load_lib.parse_mixture(mixture)
  opts = domains_lib.BuiltinOptions()
  for name, spec in files.items():
    load_lib.check_file_spec(name, spec)
  texts = []
  for name in names:
    texts += list(load_lib.domain_texts(name, files, _SEED.value, opts))
  path = bpe.train(texts, _VOCAB.value, _OUT.value, _MIN_FREQ.value)
  tok = tokenizer.load(_OUT.value)
  total_bytes = sum(len(t.encode('utf-8')) for t in texts)
  total_tokens = sum(len(tok.encode(t)) for t in texts)
  return (f'wrote {path}: vocabulary {tok.vocab_size}, {len(texts):,} documents, '
          f'{total_bytes / max(total_tokens, 1):.2f} bytes per token')


def show() -> str:
  tok = tokenizer.load(_TOKENIZER.value)
  ids = tok.encode(_TEXT.value)
  pieces = [tok.decode([i], stop_at_eos=False) for i in ids]
  return (f'{tok}: {len(ids)} tokens, bos {tok.bos_id} eos {tok.eos_id} pad {tok.pad_id}\n'
          f'ids: {ids.tolist()}\npieces: {pieces}\nround trip: {tok.decode(ids) == _TEXT.value}')


def main(argv):
  commands = {'train': train, 'show': show}
  if len(argv) != 2 or argv[1] not in commands:
    raise ValueError(f'command: expected one of {sorted(commands)}, got {" ".join(argv[1:])!r}')
  for flag in (_VOCAB, _MIN_FREQ):
    if flag.value < 1:
      raise ValueError(f'{flag.name}: must be positive, got {flag.value}')
  print(commands[argv[1]]())


def console():
  """The `mixlab-tokenizer` command."""
  cli.run(main, reads_domains=True)


if __name__ == '__main__':
  console()
