"""Packs a domain's documents into fixed-length token sequences with a loss mask.

Each document becomes BOS + prompt + completion + EOS, in the run tokenizer's ids; documents are
concatenated into one stream and cut into rows of seq_len + 1 tokens (inputs are row[:-1], targets row[1:]). The mask marks the targets that
count: completion tokens and EOS always, prompt tokens unless `loss_on_prompt` is False; the padding
that fills the last row never counts.
"""

import dataclasses
from typing import Sequence

import numpy as np

from mixing.data import tokenizer as tokenizer_lib
from mixing.data.domains import Document, Domain


class PackedRows:
  """A random-access source of packed rows: row i is (tokens_L1, mask_L1), usable by grain."""

  def __init__(self, tokens_NxL1: np.ndarray, mask_NxL1: np.ndarray):
    self.tokens_NxL1 = tokens_NxL1
    self.mask_NxL1 = mask_NxL1

  def __len__(self) -> int:
    return self.tokens_NxL1.shape[0]

  def __getitem__(self, i):
    return self.tokens_NxL1[i], self.mask_NxL1[i]

  def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_NxL1, mask_NxL1) of rows start..stop-1."""
    return self.tokens_NxL1[start:stop], self.mask_NxL1[start:stop]

  @property
  def num_tokens(self) -> int:
    """Tokens that carry loss: the domain's size as the mixers count it."""
    return int(self.mask_NxL1.sum(dtype=np.int64))


def pack(docs: Sequence[Document], seq_len: int, loss_on_prompt: bool = True,
         tok: tokenizer_lib.Tokenizer = tokenizer_lib.BYTES) -> PackedRows:
  """Packs documents into rows of seq_len + 1 tokens of `tok`; see the module docstring."""
  pieces, masks = [], []
  for doc in docs:
    piece, mask = encode_doc(tok, doc.prompt, doc.completion, loss_on_prompt)
    pieces.append(piece)
    masks.append(mask)
  return rows_of(np.concatenate(pieces), np.concatenate(masks), seq_len, tok)


def encode_doc(tok: tokenizer_lib.Tokenizer, prompt: str, completion: str, loss_on_prompt: bool,
               ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, mask) of BOS + prompt + completion + EOS; `ids` (already tokenized) replaces the
  text's ids as the completion."""
  prompt_T = tok.encode(prompt)
  completion_T = tok.encode(completion) if ids is None else ids
  split = len(prompt_T) + 1  # BOS and the prompt
  tokens = np.empty(split + len(completion_T) + 1, tok.token_dtype)  # one copy, in the row dtype
  tokens[0], tokens[-1] = tok.bos_id, tok.eos_id
  tokens[1:split] = prompt_T
  tokens[split:-1] = completion_T
  mask = np.ones(len(tokens), np.uint8)
  mask[:split] = loss_on_prompt
  mask[0] = 0  # BOS is never a target
  return tokens, mask


def rows_of(stream: np.ndarray, mask: np.ndarray, seq_len: int,
            tok: tokenizer_lib.Tokenizer) -> PackedRows:
  """Cuts a token stream and its mask into rows of seq_len + 1, padding the last (mask 0)."""
  stream = stream.astype(tok.token_dtype, copy=False)
  row = seq_len + 1
  pad = -len(stream) % row
  stream = np.concatenate([stream, np.full(pad, tok.pad_id, tok.token_dtype)])
  mask = np.concatenate([mask, np.zeros(pad, np.uint8)])
  return PackedRows(stream.reshape(-1, row), mask.reshape(-1, row))


@dataclasses.dataclass(frozen=True)
class PackedDomain:
  """A domain ready for training: packed train and held-out rows plus its evaluation items."""
  domain: Domain
  train: PackedRows
  heldout: PackedRows
  tokenizer: tokenizer_lib.Tokenizer = tokenizer_lib.BYTES  # what the rows' ids mean

  @property
  def name(self) -> str:
    return self.domain.name


def pack_domain(domain: Domain, seq_len: int, loss_on_prompt: bool = True,
                tok: tokenizer_lib.Tokenizer = tokenizer_lib.BYTES) -> PackedDomain:
  return PackedDomain(domain, pack(domain.train, seq_len, loss_on_prompt, tok),
                      pack(domain.heldout, seq_len, loss_on_prompt, tok), tok)
