"""Evaluation suites from files: JSONL with `input` and `target`, or BIG-Bench-Hard's JSON layout.

  suite.jsonl   one object per line: {"input": "...", "target": "..."}
  task.json     {"examples": [{"input": "...", "target": "..."}, ...]}   (BBH's own files)

Items are scored by exact match after stripping whitespace, prompted as BBH items are
(`domains.BBH_PROMPT`). `split_items` gives the seeded validation/test split every suite gets.
"""

import json
import os

from etils import epath
import numpy as np

from mixing.data.domains import BBH_PROMPT, Item


def _item(obj, where: str) -> Item:
  if not isinstance(obj, dict):
    raise ValueError(f'{where}: expected an object with input and target, got {type(obj).__name__}')
  for field in ('input', 'target'):
    if field not in obj:
      raise ValueError(f'{where}: missing field {field!r}')
    if not isinstance(obj[field], (str, int, float)):
      raise ValueError(f'{where}: field {field!r} must be a string, got {type(obj[field]).__name__}')
  return Item(BBH_PROMPT.format(input=str(obj['input'])), str(obj['target']))


def load_eval_file(path: str) -> list[Item]:
  """The items of one suite file; a ValueError naming the file (and line, for JSONL) otherwise."""
  if not epath.Path(path).is_file():
    raise ValueError(f'eval_files: no such file: {path!r}')
  try:
    text = epath.Path(path).read_bytes().decode('utf-8')
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f'eval_files: cannot read {path!r}: {e}') from None
  items = []
  if path.endswith('.jsonl'):
    for number, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number}: malformed JSON ({e.msg})') from None
      items.append(_item(obj, f'{path}:{number}'))
  else:
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{e.lineno}: malformed JSON ({e.msg})') from None
    if not isinstance(obj, dict) or not isinstance(obj.get('examples'), list):
      raise ValueError(f'{path}: expected BIG-Bench-Hard\'s layout {{"examples": [...]}}')
    items = [_item(x, f'{path}: examples[{i}]') for i, x in enumerate(obj['examples'])]
  if len(items) < 2:
    raise ValueError(f'eval_files: {path!r} has {len(items)} items; a suite needs at least 2 '
                     '(one for validation, one for test)')
  return items


def suite_name(path: str) -> str:
  return 'file/' + os.path.splitext(os.path.basename(path))[0]


def split_items(items, val_fraction: float, seed: int, name: str) -> tuple[list, list]:
  """A seeded split into (validation, test); both non-empty for two or more items."""
  rng = np.random.default_rng([seed, *name.encode()])
  order = rng.permutation(len(items))
  n_val = min(max(int(round(val_fraction * len(items))), 1), len(items) - 1)
  return [items[i] for i in sorted(order[:n_val])], [items[i] for i in sorted(order[n_val:])]
