"""From config to packed domains: parses mixture strings, builds built-in and file domains, packs them."""

import dataclasses
from typing import Mapping, Sequence

from mixing.data import domains as domains_lib
from mixing.data import files as files_lib
from mixing.data import packing
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
  """A domain read from a file (see files.FileSpec). With two JSONL fields, they are input and target."""
  path: str
  fields: str = ''  # JSONL: 'input_field,target_field' (e.g. 'question,answer'); empty for text
  prompt: str = domains_lib.QA_PROMPT  # how an input becomes a prompt
  answer_regex: str = ''  # extracts answers for exact match; '' = GSM8K's '#### x' if targets have it
  heldout_fraction: float = 0.05  # share of documents held out (seeded)


def parse_files(entries) -> dict[str, FileDomainSpec]:
  """--file=name=path[@input,target] flags -> {name: FileDomainSpec}."""
  specs = {}
  for entry in entries:
    name, sep, rest = entry.partition('=')
    if not sep or not name or not rest:
      raise ValueError(f'file: expected name=path[@fields], got {entry!r}')
    path, _, fields = rest.partition('@')
    specs[name] = FileDomainSpec(path=path, fields=fields)
  return specs


def file_domain(name: str, spec: FileDomainSpec, data_dir: str, seed: int,
                opts: domains_lib.BuiltinOptions) -> Domain:
  fields = tuple(f.strip() for f in spec.fields.split(',') if f.strip())
  if len(fields) not in (0, 2):
    raise ValueError(f'domain_files.{name}.fields: expected two fields (input,target), got '
                     f'{spec.fields!r}')
  source = files_lib.load(
      files_lib.FileSpec(spec.path, fields=fields, heldout_fraction=spec.heldout_fraction,
                         chunk_chars=opts.chunk_chars), data_dir, seed)
  if not fields:
    as_doc = lambda r: Document('', r['text'])
    return Domain(name, [as_doc(r) for r in source['train']],
                  [as_doc(r) for r in source['heldout']])
  key_in, key_out = fields
  heldout = list(source['heldout'])
  regex = spec.answer_regex or (domains_lib.GSM8K_ANSWER
                                if any('####' in r[key_out] for r in heldout[:10]) else None)
  as_doc = lambda r: Document(spec.prompt.format(input=r[key_in]), ' ' + r[key_out])
  items = [Item(spec.prompt.format(input=r[key_in]), r[key_out]) for r in heldout[:opts.num_eval]]
  max_len = max(len(r[key_out].encode()) for r in heldout) + 16
  return Domain(name, [as_doc(r) for r in source['train']], [as_doc(r) for r in heldout], items,
                answer_regex=regex, max_decode_len=min(max_len, 512))


def build_domain(name: str, files: Mapping[str, FileDomainSpec], data_dir: str, seed: int,
                 opts: domains_lib.BuiltinOptions) -> Domain:
  """The unpacked domain `name`: a file domain if `files` names it, else a built-in one."""
  if name not in files:
    return domains_lib.builtin_domain(name, seed, opts)
  domain = file_domain(name, files[name], data_dir, seed, opts)
  domains_lib.check_not_empty(domain)
  return domain


def load_domains(names: Sequence[str], seq_len: int, seed: int = 0,
                 files: Mapping[str, FileDomainSpec] | None = None, data_dir: str = '',
                 opts: domains_lib.BuiltinOptions = domains_lib.BuiltinOptions(),
                 loss_on_prompt: bool = True, train_docs: Mapping[str, int] | None = None,
                 tok: tokenizer.Tokenizer = tokenizer.BYTES) -> list[packing.PackedDomain]:
  """Builds and packs each named domain: a file domain if `files` names it, else a built-in one.

  train_docs: name -> how many of its training documents to keep (the first ones; default all).
  tok: the tokenizer the rows are packed with.
  """
  files, train_docs = files or {}, train_docs or {}
  out = []
  for name in names:
    domain = build_domain(name, files, data_dir, seed, opts)
    if name in train_docs:
      domain = dataclasses.replace(domain, train=domain.train[:max(int(train_docs[name]), 1)])
    out.append(packing.pack_domain(domain, seq_len, loss_on_prompt, tok))
  return out
