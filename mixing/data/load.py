"""From config to packed domains: parses mixture strings, builds built-in and file domains, packs them."""

import contextlib
import dataclasses
import re
from typing import Mapping, Sequence

from mixing.data import build as build_lib
from mixing.data import domains as domains_lib
from mixing.data import formats
from mixing.data import packing
from mixing.data import shards
from mixing.data import tokenizer
from mixing.data.domains import Document, Domain, Item


def parse_mixture(text: str, field: str = 'domains') -> tuple[list[str], list[float]]:
  """'code/python:2,math/easy' -> (['code/python', 'math/easy'], [2.0, 1.0]); weight 1 if omitted."""
  names, weights = [], []
  for part in (p.strip() for p in str(text).split(',')):
    if not part:
      continue
    name, _, weight = part.partition(':')
    try:
      weights.append(float(weight) if weight else 1.0)
    except ValueError:
      raise ValueError(f'{field}: weight {weight!r} of {name!r} is not a number') from None
    if name in names:
      raise ValueError(f'{field}: domain {name!r} is listed twice')
    names.append(name)
  if not names:
    raise ValueError(f'{field}: no domains in {text!r}')
  return names, weights


@dataclasses.dataclass(frozen=True)
class FileDomainSpec:
  """A domain read from files (see formats.py for formats, build.py for how it is built and cached)."""
  path: str | Sequence[str]  # a glob, a folder, a file, or several of them (a list, or ',' between)
  fields: str = ''  # '' = records' 'text' field; 'content' = that field; 'input,target' = a pair
  prompt: str = domains_lib.QA_PROMPT  # the template an input becomes a prompt with ({input})
  answer_regex: str = ''  # extracts answers for exact match; '' = GSM8K's '#### x' if targets have it
  heldout_fraction: float = 0.05  # share of documents held out, by a seeded hash of each one's key
  format: str = ''  # '' = from each file's extension; else one of formats.FORMATS
  split: str = 'train'  # TFDS datasets: the split read

  @property
  def globs(self) -> tuple[str, ...]:
    paths = self.path.split(',') if isinstance(self.path, str) else list(self.path)
    return tuple(p.strip() for p in paths if str(p).strip())

  def reading(self, chunk_chars: int) -> formats.Reading:
    return formats.Reading(self.format, tuple(f.strip() for f in self.fields.split(',') if f.strip()),
                           self.prompt, chunk_chars, self.split)


def check_file_spec(name: str, spec: FileDomainSpec, chunk_chars: int = 1) -> list:
  """The files the spec's globs match (`formats.expand`, read with `chunk_chars`), or a ValueError
  naming domain_files.NAME.<field> for a bad spec or globs matching nothing."""
  field = f'domain_files.{name}'
  fields = spec.reading(1).fields
  if len(fields) > 2:
    raise ValueError(f'{field}.fields: expected a text field or two fields (input,target), got '
                     f'{spec.fields!r}')
  if spec.format and spec.format not in formats.FORMATS:
    raise ValueError(f'{field}.format: expected one of {", ".join(formats.FORMATS)}, got '
                     f'{spec.format!r}')
  if not 0.0 < spec.heldout_fraction < 1.0:
    raise ValueError(f'{field}.heldout_fraction: must be in (0, 1), got {spec.heldout_fraction!r}')
  if len(fields) == 2 and '{input}' not in spec.prompt:
    raise ValueError(f'{field}.prompt: must contain {{input}}, got {spec.prompt!r}')
  if not spec.globs:
    raise ValueError(f'{field}.path: empty')
  try:
    return formats.expand(spec.globs, spec.reading(chunk_chars))
  except ValueError as e:
    raise ValueError(f'{field}.{e}') from None


_WEIGHT = re.compile(r':([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$')


def parse_domain_flag(entry: str) -> tuple[str, FileDomainSpec, float | None]:
  """'NAME=GLOB[,GLOB][@field|@input,target][:weight]' -> (name, spec, weight or None)."""
  name, sep, rest = str(entry).partition('=')
  if not sep or not name.strip() or not rest:
    raise ValueError(f'domain: expected NAME=GLOB[@field|@input,target][:weight], got {entry!r}')
  weight = _WEIGHT.search(rest)
  if weight:
    rest = rest[:weight.start()]
  path, at, fields = rest.rpartition('@')
  if not at or '/' in fields or '*' in fields:
    path, fields = rest, ''
  if not path:
    raise ValueError(f'domain: no path in {entry!r}')
  return name.strip(), FileDomainSpec(path=path, fields=fields), (
      float(weight.group(1)) if weight else None)


def merge_domain_flags(mixture: str, entries) -> tuple[str, dict[str, FileDomainSpec]]:
  """(mixture with each --domain NAME added, {name: spec}): a NAME the mixture lists keeps its place
  (a given weight replaces its own); a new one joins with its weight (default 1)."""
  names, weights = parse_mixture(mixture) if str(mixture).strip(', ') else ([], [])
  specs = {}
  for entry in entries:
    name, spec, weight = parse_domain_flag(entry)
    if name in specs:
      raise ValueError(f'domain: {name!r} is given twice')
    specs[name] = spec
    if name in names:
      weights[names.index(name)] = weights[names.index(name)] if weight is None else weight
    else:
      names, weights = names + [name], weights + [1.0 if weight is None else weight]
  return ','.join(f'{n}:{w:g}' for n, w in zip(names, weights)), specs


def add_domain_flags(config, entries) -> None:
  """Applies --domain flags to a config: config.domain_files and config.domains (merge_domain_flags)."""
  mixture, specs = merge_domain_flags(config.get('domains', ''), entries)
  with config.unlocked() if hasattr(config, 'unlocked') else contextlib.nullcontext():
    for name, spec in specs.items():
      config.domain_files[name] = {'path': spec.path, 'fields': spec.fields}
    if 'domains' in config:
      config.domains = mixture


def file_domain(name: str, spec: FileDomainSpec, data_dir: str, seed: int,
                opts: domains_lib.BuiltinOptions, seq_len: int = 128, loss_on_prompt: bool = True,
                tok: tokenizer.Tokenizer = tokenizer.BYTES, workers: int = 0) -> packing.PackedDomain:
  """The packed file domain `name`, built (streaming, cached) by build.open_built."""
  files = check_file_spec(name, spec, opts.chunk_chars)
  reading = spec.reading(opts.chunk_chars)
  built = build_lib.open_built(name, build_lib.BuildSpec(
      spec.globs, reading, spec.heldout_fraction, seq_len, loss_on_prompt, seed), tok, data_dir,
      workers, files)
  train = shards.NotKept(name, built.train_docs)
  if len(reading.fields) < 2:
    return packing.PackedDomain(Domain(name, train, built.heldout_docs), built.train,
                                built.heldout, tok)
  first = built.heldout_docs[:max(opts.num_eval, 10)]
  targets = [d.completion[1:] for d in first]  # completions are ' ' + target
  regex = spec.answer_regex or (domains_lib.GSM8K_ANSWER if any('####' in t for t in targets[:10])
                                else None)
  items = [Item(d.prompt, t) for d, t in zip(first, targets)][:opts.num_eval]
  max_len = max(len(t.encode()) for t in targets) + 16
  domain = Domain(name, train, built.heldout_docs, items, answer_regex=regex,
                  max_decode_len=min(max_len, 512))
  return packing.PackedDomain(domain, built.train, built.heldout, tok)


def file_texts(name: str, spec: FileDomainSpec, seed: int, chunk_chars: int):
  """The training documents' texts of file domain `name`, streamed (for training a tokenizer)."""
  files = check_file_spec(name, spec, chunk_chars)
  reading = spec.reading(chunk_chars)
  for unit in formats.plan(files, reading):
    for _, prompt, completion, ids in formats.documents(unit, reading):
      if ids is None and build_lib.content_hash(prompt, completion, ids, seed) >= spec.heldout_fraction:
        yield prompt + completion


def domain_texts(name: str, files: Mapping[str, FileDomainSpec], seed: int,
                 opts: domains_lib.BuiltinOptions):
  """The training texts of domain `name` (a file domain if `files` names it, else a built-in one)."""
  if name in files:
    return file_texts(name, files[name], seed, opts.chunk_chars)
  return (d.prompt + d.completion for d in domains_lib.builtin_domain(name, seed, opts).train)


def load_domains(names: Sequence[str], seq_len: int, seed: int = 0,
                 files: Mapping[str, FileDomainSpec] | None = None, data_dir: str = '',
                 opts: domains_lib.BuiltinOptions = domains_lib.BuiltinOptions(),
                 loss_on_prompt: bool = True, train_docs: Mapping[str, int] | None = None,
                 tok: tokenizer.Tokenizer = tokenizer.BYTES,
                 workers: int = 0) -> list[packing.PackedDomain]:
  """Builds and packs each named domain: a file domain if `files` names it, else a built-in one.

  train_docs: name -> how many of its training documents to keep (the first ones; default all).
  tok: the tokenizer the rows are packed with.
  workers: processes building file domains (0: one per CPU core).
  """
  files, train_docs = files or {}, train_docs or {}
  out = []
  for name in names:
    keep = max(int(train_docs.get(name, 1)), 1)
    if name in files:
      packed = file_domain(name, files[name], data_dir, seed, opts, seq_len, loss_on_prompt, tok,
                           workers)
      if name in train_docs:  # rows of about the first `keep` documents
        rows = packed.train.head(max(1, -(-len(packed.train) * keep // len(packed.domain.train))))
        packed = dataclasses.replace(packed, train=rows)
      out.append(packed)
      continue
    domain = domains_lib.builtin_domain(name, seed, opts)
    if name in train_docs:
      domain = dataclasses.replace(domain, train=domain.train[:keep])
    out.append(packing.pack_domain(domain, seq_len, loss_on_prompt, tok))
  return out
