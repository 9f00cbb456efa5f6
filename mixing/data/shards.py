"""Reading built file domains (see build.py): packed rows and held-out documents from ArrayRecord shards.

A row record is the row's seq_len + 1 token ids (the tokenizer's dtype, little-endian) followed by its
loss mask as packed bits; a document record is JSON [prompt, completion]. Readers open lazily, one per
shard, with ArrayRecord's random-access options (`records.record_source`); a remote shard is read
from a local copy.
"""

import bisect
import json
from typing import Sequence

from etils import epath
import numpy as np

from mixing.data import records
from mixing.data.domains import Document


def _reader(path: str):
  return records.record_source(path, 'array_record')


class ShardRows:
  """Packed rows stored in ArrayRecord shards: row i is (tokens_L1, mask_L1), like PackedRows."""

  def __init__(self, paths: Sequence[str], counts: Sequence[int], row_len: int, dtype,
               num_tokens: int, limit: int | None = None):
    self._paths, self._dtype, self._row_len = list(paths), np.dtype(dtype), row_len
    self._ends = np.cumsum(counts).tolist()
    self._len = self._ends[-1] if self._ends else 0
    self._num_tokens = num_tokens
    if limit is not None and limit < self._len:  # the first `limit` rows; tokens scale with them
      self._num_tokens = int(round(num_tokens * limit / max(self._len, 1)))
      self._len = limit
    self._readers = {}

  def __len__(self) -> int:
    return self._len

  @property
  def num_tokens(self) -> int:
    """Tokens that carry loss."""
    return self._num_tokens

  @property
  def folder(self) -> str:
    """Where the shards are."""
    return str(epath.Path(self._paths[0]).parent) if self._paths else ''

  @property
  def nbytes(self) -> int:
    """The shards' size on disk."""
    return sum(epath.Path(p).stat().length for p in self._paths)

  def head(self, n: int) -> 'ShardRows':
    counts = np.diff([0] + self._ends).tolist()
    return ShardRows(self._paths, counts, self._row_len, self._dtype, self._num_tokens, n)

  def __getstate__(self):
    return dict(self.__dict__, _readers={})

  def _decode(self, record: bytes):
    split = self._row_len * self._dtype.itemsize
    tokens = np.frombuffer(record[:split], self._dtype)
    mask = np.unpackbits(np.frombuffer(record[split:], np.uint8))[:self._row_len]
    return tokens, mask

  def _read(self, indices: list[int]) -> list[bytes]:
    by_shard = {}
    for pos, i in enumerate(indices):
      if not 0 <= i < self._len:
        raise IndexError(f'row {i} out of range [0, {self._len})')
      shard = bisect.bisect_right(self._ends, i)
      by_shard.setdefault(shard, []).append((pos, i - (self._ends[shard - 1] if shard else 0)))
    out = [b''] * len(indices)
    for shard, wanted in by_shard.items():
      if shard not in self._readers:
        self._readers[shard] = _reader(self._paths[shard])
      for (pos, _), record in zip(wanted,
                                  self._readers[shard].__getitems__([j for _, j in wanted])):
        out[pos] = record
    return out

  def __getitem__(self, i):
    i = int(i) + (self._len if int(i) < 0 else 0)
    return self._decode(self._read([i])[0])

  def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_NxL1, mask_NxL1) of rows start..stop-1."""
    pairs = [self._decode(r) for r in self._read(list(range(start, stop)))]
    if not pairs:
      return (np.zeros((0, self._row_len), self._dtype), np.zeros((0, self._row_len), np.uint8))
    return np.stack([t for t, _ in pairs]), np.stack([m for _, m in pairs])


class StoredDocs(Sequence):
  """Documents stored one JSON [prompt, completion] per record, read lazily."""

  def __init__(self, paths: Sequence[str], counts: Sequence[int]):
    self._rows = ShardRows(paths, counts, 0, np.uint8, 0)

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    i = int(i) + (len(self) if int(i) < 0 else 0)
    return Document(*json.loads(self._rows._read([i])[0]))


class NotKept(Sequence):
  """A file domain's training documents: counted, but kept only as packed rows."""

  def __init__(self, name: str, count: int):
    self._name, self._count = name, count

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, i):
    raise ValueError(f'domain {self._name!r}: a file domain keeps its training documents only as '
                     'packed rows (read them with formats.documents)')
