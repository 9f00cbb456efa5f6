"""Built file domains' shards (see build.py): the row record format, and reading rows and held-out
documents back by index.

A row record is the row's seq_len + 1 token ids (the tokenizer's dtype, little-endian) followed by its
loss mask as packed bits (`encode_rows` / `ShardRows`); a document record is JSON [prompt, completion]
(`StoredDocs`). Readers open lazily, one per shard, with ArrayRecord's random-access options
(`records.record_source`); a remote shard is read from a local copy.
"""

import bisect
import json
from typing import Sequence

from etils import epath
import numpy as np

from mixing.data import records
from mixing.data.domains import Document


def encode_rows(tokens_NxL1: np.ndarray, mask_NxL1: np.ndarray) -> np.ndarray:
  """One uint8 record per row: its ids (little-endian) then its mask's packed bits."""
  ids = tokens_NxL1.astype(tokens_NxL1.dtype.newbyteorder('<'), copy=False)
  return np.concatenate([ids.view(np.uint8).reshape(len(ids), -1),
                         np.packbits(mask_NxL1, axis=1)], axis=1)


class _Records:
  """Records numbered across shards (shard s holds counts[s] of them), the first `limit` of them."""

  def __init__(self, paths: Sequence[str], counts: Sequence[int], limit: int | None = None):
    self.paths = list(paths)
    self._ends = np.cumsum(counts).tolist()
    total = self._ends[-1] if self._ends else 0
    self.size = total if limit is None else min(limit, total)
    self._readers = {}

  def __getstate__(self):
    return dict(self.__dict__, _readers={})

  def counts(self) -> list[int]:
    return np.diff([0] + self._ends).tolist()

  def read(self, indices: Sequence[int]) -> list[bytes]:
    """The records at `indices` (negative ones count from the end), one read per shard."""
    indices, by_shard = [int(i) for i in indices], {}
    for pos, i in enumerate(indices):
      i += self.size if i < 0 else 0
      if not 0 <= i < self.size:
        raise IndexError(f'record {i} out of range [0, {self.size})')
      shard = bisect.bisect_right(self._ends, i)
      by_shard.setdefault(shard, []).append((pos, i - (self._ends[shard - 1] if shard else 0)))
    out = [b''] * len(indices)
    for shard, wanted in by_shard.items():
      if shard not in self._readers:
        self._readers[shard] = records.record_source(self.paths[shard], 'array_record')
      for (pos, _), record in zip(wanted,
                                  self._readers[shard].__getitems__([j for _, j in wanted])):
        out[pos] = record
    return out


class ShardRows:
  """Packed rows stored in ArrayRecord shards: row i is (tokens_L1, mask_L1), like PackedRows."""

  def __init__(self, paths: Sequence[str], counts: Sequence[int], row_len: int, dtype,
               num_tokens: int, limit: int | None = None):
    self._records = _Records(paths, counts, limit)
    self._dtype, self._row_len = np.dtype(dtype), row_len
    self._all_tokens = num_tokens  # of every row; the first `limit` rows' scale with them
    total = sum(counts)
    self._num_tokens = (num_tokens if self._records.size == total else
                        int(round(num_tokens * self._records.size / max(total, 1))))

  def __len__(self) -> int:
    return self._records.size

  @property
  def num_tokens(self) -> int:
    """Tokens that carry loss."""
    return self._num_tokens

  @property
  def folder(self) -> str:
    """Where the shards are."""
    return str(epath.Path(self._records.paths[0]).parent) if self._records.paths else ''

  @property
  def nbytes(self) -> int:
    """The shards' size on disk."""
    return sum(epath.Path(p).stat().length for p in self._records.paths)

  def head(self, n: int) -> 'ShardRows':
    return ShardRows(self._records.paths, self._records.counts(), self._row_len, self._dtype,
                     self._all_tokens, n)

  def _decode(self, record: bytes):
    split = self._row_len * self._dtype.itemsize
    tokens = np.frombuffer(record[:split], self._dtype)
    mask = np.unpackbits(np.frombuffer(record[split:], np.uint8))[:self._row_len]
    return tokens, mask

  def __getitem__(self, i):
    return self._decode(self._records.read([i])[0])

  def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_NxL1, mask_NxL1) of rows start..stop-1."""
    pairs = [self._decode(r) for r in self._records.read(range(start, stop))]
    if not pairs:
      return (np.zeros((0, self._row_len), self._dtype), np.zeros((0, self._row_len), np.uint8))
    return np.stack([t for t, _ in pairs]), np.stack([m for _, m in pairs])


class StoredDocs(Sequence):
  """Documents stored one JSON [prompt, completion] per record, read lazily."""

  def __init__(self, paths: Sequence[str], counts: Sequence[int]):
    self._records = _Records(paths, counts)

  def __len__(self) -> int:
    return self._records.size

  def __getitem__(self, i):
    if isinstance(i, slice):
      indices = range(*i.indices(len(self)))
      return [Document(*json.loads(r)) for r in self._records.read(indices)]
    return Document(*json.loads(self._records.read([i])[0]))


class NotKept(Sequence):
  """A file domain's training documents: counted, but kept only as packed rows."""

  def __init__(self, name: str, count: int):
    self._name, self._count = name, count

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, i):
    raise ValueError(f'domain {self._name!r}: a file domain keeps its training documents only as '
                     'packed rows (read them with formats.documents)')
