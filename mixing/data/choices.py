"""Multiple-choice log-likelihood items from held-out documents, as lm-eval-harness scores MMLU.

A usable held-out document of a domain gives (context, option) pairs:
  prompted documents (non-empty prompt)  one: context = prompt, option = the completion clipped to
                                         `option_bytes` bytes (at a character boundary)
  plain text (empty prompt)              up to `cuts_per_doc` (default 1): cut at the whitespace
                                         nearest the middle (the middle itself if there is none),
                                         then nearest 1/4, 3/4, 1/8, 5/8, ... of the text: context =
                                         the text before the cut, option = the next `option_bytes`
                                         bytes; a cut whose window would be short (by over 3 bytes)
                                         or that repeats an earlier cut gives nothing
Pairs are listed cut-major (every document's first pair in held-out order, then every second pair,
...), so more cuts only append pairs; corpus domains with few held-out chunks (prose/poems: 3) need
cuts_per_doc > 1 for large sets. An item is a pair; its distractors are the options of pairs from
OTHER held-out documents of the same domain, drawn by an rng seeded by (seed, domain name, pair
index), with pairwise distinct texts. An item has min(num_options, distinct option texts of the
domain) options, fewer only if its other documents lack them; items under `min_options` are
dropped, and a domain left with no item raises a ValueError (yes/no tasks such as bbh/web_of_lies
give 2 options).

Rows are context + option tokens (the context starts with BOS, as packing frames a document, and is
cut from the LEFT so every option of the item fits seq_len + 1 tokens with the same context),
right-padded with 0. Rows are ordered by domain, item, option; option 0 is the correct one.

Disjoint item sets: items are the usable pairs in that order, so `build(..., num_items=8)` (a
feedback set) and `build(..., num_items=128, skip=8)` (a test set) never share an item, and an item
is the same whichever call builds it, given the same option_bytes and cuts_per_doc (both decide
which pairs are usable, and in what order). Distractors come from every usable pair, so one set's correct
option may be another set's distractor, and with cuts_per_doc > 1 one set's option may lie inside
another set's context from the same document.

Scoring (`metrics`): an item is right when its correct option's score is >= every distractor's: a
tie goes to the lowest option index (the correct one), as numpy's argmax would. choice_acc scores by
the summed log-probability of the option tokens, choice_acc_norm by that over the option's byte
length. choice_prob is continuous: the probability the model gives the correct option among the
item's options (a softmax of their summed log-probabilities; a NaN option gets 0). A small change of
a model moves it a little where it can flip a whole binary suite's accuracy (a yes/no bias), so it
separates mixtures with less noise over seeds (as Heineman et al. 2025, "Signal and Noise", find of
continuous metrics for small-scale data decisions).
"""

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from mixing.data import domains as domains_lib
from mixing.data import tokenizer

METRICS = ('acc', 'acc_norm', 'prob')  # `metrics` gives eval/<name>/choice_<metric> for each
_SHORT_WINDOW_SLACK = 3  # a plain-text window may lose up to 3 bytes to a character boundary


@dataclasses.dataclass(frozen=True)
class ChoiceSet:
  """Scored rows of multiple-choice items: N rows = sum over items of their option counts."""
  names: tuple[str, ...]  # domain names; domain_N indexes them
  tokens_NxL1: np.ndarray  # int32 context + option tokens, right-padded with 0
  mask_NxL: np.ndarray  # float32, 1 where the target (tokens_NxL1[:, 1:]) is an option token
  domain_N: np.ndarray  # int32 domain index of each row
  item_N: np.ndarray  # int32 global item index of each row (0 .. num_items - 1)
  option_N: np.ndarray  # int32 option index within its item; 0 is the correct option
  option_bytes_N: np.ndarray  # int32 byte length of the option text (for acc_norm)
  num_options: int  # the most options an item has
  # bool per item: its context lost tokens from the left to fit seq_len + 1 (None: not recorded)
  cut_I: np.ndarray | None = None

  @property
  def num_rows(self) -> int:
    return self.tokens_NxL1.shape[0]

  @property
  def num_items(self) -> int:
    return int(self.item_N.max()) + 1 if self.num_rows else 0

  @property
  def seq_len(self) -> int:
    return self.tokens_NxL1.shape[1] - 1

  def num_items_D(self) -> np.ndarray:
    """Items per domain."""
    return np.bincount(self.domain_N[self.option_N == 0], minlength=len(self.names))

  def options_I(self) -> np.ndarray:
    """Options per item."""
    return np.bincount(self.item_N, minlength=self.num_items)

  def _domain_mean(self, value_I) -> np.ndarray:
    """Per domain, the mean of an item value over its items."""
    first = self.option_N == 0
    sums = np.bincount(self.domain_N[first], weights=np.asarray(value_I)[self.item_N[first]],
                       minlength=len(self.names))
    return sums / np.maximum(self.num_items_D(), 1)

  def chance_D(self) -> np.ndarray:
    """Expected choice_acc of random guessing per domain (mean of 1 / options over its items)."""
    return self._domain_mean(1.0 / self.options_I())

  def cut_D(self) -> np.ndarray:
    """Share of each domain's items whose context was cut from the left to fit seq_len."""
    return self._domain_mean(self.cut_I if self.cut_I is not None else np.zeros(self.num_items))


def cut_warning(choice_set: ChoiceSet, what: str) -> str | None:
  """One line naming the domains whose items lost the start of their context, or None."""
  cut_D = choice_set.cut_D()
  if not cut_D.any():
    return None
  listed = ', '.join(f'{name} {share:.0%}' for name, share in zip(choice_set.names, cut_D) if share)
  return (f'{what}: contexts cut from the left to fit seq_len {choice_set.seq_len} in '
          f'{int((cut_D > 0).sum())} of {len(cut_D)} suites ({listed}); a longer seq_len shows '
          'the model whole prompts')


def _clip_bytes(text: str, n: int) -> str:
  """The longest prefix of `text` of at most n UTF-8 bytes that ends at a character boundary."""
  data = text.encode('utf-8')
  if len(data) <= n:
    return text
  while n > 0 and (data[n] & 0xC0) == 0x80:  # data[n] continues a character: back off
    n -= 1
  return data[:n].decode('utf-8')


def _radical_inverse(n: int) -> float:
  """n's base-2 digits mirrored after the point: 1/2, 1/4, 3/4, 1/8, 5/8, ... for n = 1, 2, ..."""
  out, scale = 0.0, 0.5
  while n:
    out, n, scale = out + scale * (n & 1), n >> 1, scale / 2
  return out


def _cut_near(text: str, at: int) -> int:
  """The index of the whitespace character nearest `at` (`at` itself if there is none)."""
  for delta in range(len(text)):
    for i in (at - delta, at + delta):
      if 0 < i < len(text) and text[i].isspace():
        return i
  return at


def _pairs(doc: domains_lib.Document, option_bytes: int, cuts: int) -> list[tuple[str, str]]:
  """A document's (context, option) pairs, at most `cuts` (see the module docstring)."""
  if doc.prompt:
    option = _clip_bytes(doc.completion, option_bytes)
    return [(doc.prompt, option)] if option.strip() else []
  text, out, seen = doc.completion, [], set()
  for j in range(cuts):
    cut = _cut_near(text, int(len(text) * _radical_inverse(j + 1)))
    option = _clip_bytes(text[cut:], option_bytes)
    if (cut not in seen and cut > 0 and option.strip()
        and len(option.encode()) >= option_bytes - _SHORT_WINDOW_SLACK):
      out.append((text[:cut], option))
    seen.add(cut)
  return out


def _domain_items(domain, num_items, skip, seed, num_options, min_options, option_bytes, cuts):
  """[(context, [option 0 (correct), distractors...])] for the domain's items."""
  per_doc = [_pairs(doc, option_bytes, cuts) for doc in domain.heldout]
  # Cut-major order: every document's first pair, then every second pair, ...
  pairs = [(d, pair) for j in range(cuts) for d, doc_pairs in enumerate(per_doc)
           if j < len(doc_pairs) for pair in [doc_pairs[j]]]
  distinct = len({option for _, (_, option) in pairs})
  options_per_item = min(num_options, distinct)
  if options_per_item < min_options:
    raise ValueError(f'choices: domain {domain.name!r} has {distinct} distinct option texts in '
                     f'{len(pairs)} usable held-out pairs, fewer than min_options={min_options}')
  name_key = zlib.crc32(domain.name.encode())
  items = []
  for index in range(skip, min(skip + num_items, len(pairs))):
    doc, (context, correct) = pairs[index]
    rng = np.random.default_rng([seed, name_key, index])
    options = [correct]
    for other in rng.permutation(len(pairs)):
      if len(options) == options_per_item:
        break
      other_doc, (_, option) = pairs[other]
      if other_doc != doc and option not in options:
        options.append(option)
    if len(options) >= min_options:
      items.append((context, options))
  if not items:
    raise ValueError(f'choices: domain {domain.name!r} gives no item from its {len(pairs)} usable '
                     f'held-out pairs after skip={skip} (with min_options={min_options})')
  return items


def _check(field: str, value, ok: bool):
  if not ok:
    raise ValueError(f'choices: bad {field}={value!r}')


def build(domains: Sequence[domains_lib.Domain], num_items: int, seq_len: int, seed: int,
          num_options: int = 4, option_bytes: int = 48, skip: int = 0, min_options: int = 2,
          cuts_per_doc: int = 1, tok: tokenizer.Tokenizer = tokenizer.BYTES) -> ChoiceSet:
  """Up to `num_items` items per domain from its held-out (context, option) pairs after `skip`.

  Args:
    domains: raw domains (e.g. `[p.domain for p in packed_domains]`); their names must be distinct.
    num_items: items per domain at most (a domain with fewer usable pairs gives fewer).
    seq_len: model input length; rows hold seq_len + 1 tokens.
    seed: distractor choice; the same seed gives the same set.
    num_options: options per item at most (fewer only where the domain has fewer distinct texts).
    option_bytes: longest option, in UTF-8 bytes; must leave room for context (< seq_len).
    skip: usable pairs per domain to pass over first (for a set disjoint from a smaller one).
    min_options: items with fewer options are dropped, and a domain left with none raises
      ValueError (pass num_options for a fixed count).
    cuts_per_doc: plain-text documents give up to this many pairs (prompted ones give one).
    tok: the tokenizer of the model that will score the rows.
  """
  names = tuple(d.name for d in domains)
  _check('domains', names, bool(names) and len(set(names)) == len(names))
  _check('num_items', num_items, num_items >= 1)
  _check('seq_len', seq_len, seq_len >= 2)
  _check('num_options', num_options, num_options >= 2)
  _check('min_options', min_options, 2 <= min_options <= num_options)
  _check('option_bytes', option_bytes, 1 <= option_bytes < seq_len)
  _check('skip', skip, skip >= 0)
  _check('cuts_per_doc', cuts_per_doc, cuts_per_doc >= 1)
  return _rows(names, [_domain_items(domain, num_items, skip, seed, num_options, min_options,
                                     option_bytes, cuts_per_doc) for domain in domains], seq_len,
               tok)


def build_items(suites: Sequence[tuple[str, Sequence[tuple[str, str]], Sequence[str]]],
                seq_len: int, seed: int, num_options: int = 4,
                tok: tokenizer.Tokenizer = tokenizer.BYTES) -> ChoiceSet:
  """Multiple-choice items from evaluation items: `suites` is [(name, [(prompt, answer)], pool)].

  Each item's options are its answer and up to num_options - 1 distinct distractors drawn from
  `pool` (e.g. every answer of the suite: a label set such as Yes/No gives 2 options), seeded by
  (seed, name, item index). Options are scored as the model reads an answer after its prompt:
  ' ' + answer.
  """
  names = tuple(name for name, _, _ in suites)
  _check('suites', names, bool(names) and len(set(names)) == len(names))
  _check('num_options', num_options, num_options >= 2)
  _check('seq_len', seq_len, seq_len >= 2)
  per_suite = []
  for name, items, pool in suites:
    distinct = sorted({a.strip() for a in pool})
    name_key = zlib.crc32(name.encode())
    out = []
    for index, (prompt, answer) in enumerate(items):
      rng = np.random.default_rng([seed, name_key, index])
      others = [o for o in distinct if o != answer.strip()]
      picked = [others[i] for i in rng.permutation(len(others))[:num_options - 1]]
      if picked:
        out.append((prompt, [' ' + answer.strip()] + [' ' + o for o in picked]))
    if not out:
      raise ValueError(f'choices: suite {name!r} has no item with a distractor in its pool')
    per_suite.append(out)
  return _rows(names, per_suite, seq_len, tok)


def _rows(names, items_per_domain, seq_len: int, tok: tokenizer.Tokenizer) -> ChoiceSet:
  """The ChoiceSet of [(context, [correct option, distractors...])] per domain, in `tok`'s ids; an
  option's length for acc_norm is its UTF-8 bytes, as lm-eval-harness counts it."""
  row = seq_len + 1
  tokens, masks, domain_n, item_n, option_n, bytes_n, cut = [], [], [], [], [], [], []
  item = 0
  for d, items in enumerate(items_per_domain):
    for context, options in items:
      option_ids = [tok.encode(o) for o in options]
      whole = tok.encode(context, bos=True)
      context_ids = whole[-(row - max(map(len, option_ids))):]
      cut.append(len(context_ids) < len(whole))
      for o, ids in enumerate(option_ids):
        tokens_L1 = np.zeros(row, np.int32)
        tokens_L1[:len(context_ids)] = context_ids
        tokens_L1[len(context_ids):len(context_ids) + len(ids)] = ids
        mask_L = np.zeros(seq_len, np.float32)
        mask_L[len(context_ids) - 1:len(context_ids) - 1 + len(ids)] = 1.0
        tokens.append(tokens_L1)
        masks.append(mask_L)
        domain_n.append(d)
        item_n.append(item)
        option_n.append(o)
        bytes_n.append(len(options[o].encode('utf-8')))
      item += 1
  as_int = lambda xs: np.asarray(xs, np.int32)
  return ChoiceSet(names, np.stack(tokens), np.stack(masks), as_int(domain_n), as_int(item_n),
                   as_int(option_n), as_int(bytes_n), int(np.bincount(item_n).max()),
                   np.asarray(cut, bool))


def _correct_I(score_N: np.ndarray, choice_set: ChoiceSet) -> np.ndarray:
  """Per item: the correct option's score is >= every distractor's (ties go to option 0)."""
  first = choice_set.option_N == 0
  correct_I = np.empty(choice_set.num_items)
  correct_I[choice_set.item_N[first]] = score_N[first]
  best_other_I = np.full(choice_set.num_items, -np.inf)
  np.maximum.at(best_other_I, choice_set.item_N[~first], score_N[~first])
  return correct_I >= best_other_I


def _correct_prob_I(logprob_N: np.ndarray, choice_set: ChoiceSet) -> np.ndarray:
  """Per item: softmax of its options' log-probabilities at the correct option (NaN: probability 0)."""
  lp_N = np.where(np.isnan(logprob_N), -np.inf, logprob_N)
  top_I = np.full(choice_set.num_items, -np.inf)
  np.maximum.at(top_I, choice_set.item_N, lp_N)
  with np.errstate(invalid='ignore'):  # an item whose options are all NaN: -inf - -inf
    shift_N = np.where(np.isfinite(lp_N), lp_N - top_I[choice_set.item_N], -np.inf)
  mass_I = np.zeros(choice_set.num_items)
  np.add.at(mass_I, choice_set.item_N, np.exp(shift_N))
  first = choice_set.option_N == 0
  out_I = np.zeros(choice_set.num_items)
  item = choice_set.item_N[first]
  with np.errstate(invalid='ignore', divide='ignore'):
    out_I[item] = np.where(mass_I[item] > 0, np.exp(shift_N[first]) / mass_I[item], 0.0)
  return out_I


def metrics(logprob_N, choice_set: ChoiceSet) -> dict[str, float]:
  """`eval/<name>/choice_acc`, `.../choice_acc_norm` and `.../choice_prob` per domain (no mean over
  domains; module docstring).

  logprob_N: each row's summed option-token log-probability. A NaN score never wins.
  """
  logprob_N = np.asarray(logprob_N, np.float64)
  _check('logprob_N.shape', logprob_N.shape, logprob_N.shape == (choice_set.num_rows,))
  item_domain_I = np.empty(choice_set.num_items, np.int64)
  first = choice_set.option_N == 0
  item_domain_I[choice_set.item_N[first]] = choice_set.domain_N[first]
  count_D = np.maximum(np.bincount(item_domain_I, minlength=len(choice_set.names)), 1)
  out = {}
  for key, score_N in (('choice_acc', logprob_N),
                       ('choice_acc_norm', logprob_N / choice_set.option_bytes_N)):
    right_D = np.bincount(item_domain_I, weights=_correct_I(score_N, choice_set),
                          minlength=len(choice_set.names))
    for name, acc in zip(choice_set.names, right_D / count_D):
      out[f'eval/{name}/{key}'] = float(acc)
  prob_D = np.bincount(item_domain_I, weights=_correct_prob_I(logprob_N, choice_set),
                       minlength=len(choice_set.names)) / count_D
  out.update({f'eval/{name}/choice_prob': float(p) for name, p in zip(choice_set.names, prob_D)})
  return out


def metrics_K(logprob_KxN, choice_set: ChoiceSet) -> list[dict[str, float]]:
  """`metrics` of each of K population members."""
  logprob_KxN = np.asarray(logprob_KxN)
  _check('logprob_KxN.shape', logprob_KxN.shape,
         logprob_KxN.ndim == 2 and logprob_KxN.shape[1] == choice_set.num_rows)
  return [metrics(logprob_N, choice_set) for logprob_N in logprob_KxN]
