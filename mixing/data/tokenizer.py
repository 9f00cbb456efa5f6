"""Byte-level UTF-8 tokenizer: ids 0..255 are bytes, then BOS, EOS and PAD."""

import numpy as np

BOS = 256
EOS = 257
PAD = 258
VOCAB_SIZE = 259


def encode(text: str, bos: bool = False, eos: bool = False) -> np.ndarray:
  """Returns the int32 token ids of `text`'s UTF-8 bytes, optionally framed by BOS/EOS."""
  ids_T = np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int32)
  if bos or eos:
    ids_T = np.concatenate([[BOS] * bos, ids_T, [EOS] * eos]).astype(np.int32)
  return ids_T


def decode(ids, stop_at_eos: bool = True) -> str:
  """Decodes token ids to text, dropping specials; stops at the first EOS if asked."""
  ids = np.asarray(ids).reshape(-1)
  if stop_at_eos:
    eos_at = np.flatnonzero(ids == EOS)
    if eos_at.size:
      ids = ids[:eos_at[0]]
  data = ids[ids < 256].astype(np.uint8).tobytes()
  return data.decode('utf-8', errors='replace')
