"""Evaluation: per-domain held-out loss, and exact-match accuracy by greedy decoding on eval items."""

from typing import Sequence

import numpy as np

from mixing.data import tokenizer
from mixing.data.packing import PackedDomain
from models import decode


def heldout_batches(domains: Sequence[PackedDomain], eval_batches: int, batch_size: int,
                    skip_rows: int = 0) -> list[dict[str, np.ndarray]]:
  """A fixed evaluation set: each domain's first eval_batches * batch_size held-out rows (after the
  first `skip_rows`, for a set disjoint from another).

  Rows of all domains are concatenated and cut into batches of batch_size; the last batch is filled
  with mask-0 rows, which count for nothing.
  """
  tokens, masks, ids = [], [], []
  for d, p in enumerate(domains):
    start = min(len(p.heldout), skip_rows)
    n = min(len(p.heldout) - start, eval_batches * batch_size)
    rows_NxL1, mask_NxL1 = p.heldout.rows(start, start + n)
    tokens.append(rows_NxL1)
    masks.append(mask_NxL1)
    ids.append(np.full(n, d, np.int32))
  tokens_NxL1 = np.concatenate(tokens).astype(np.int32)
  mask_NxL1 = np.concatenate(masks).astype(np.float32)
  domain_N = np.concatenate(ids)
  pad = -len(domain_N) % batch_size
  pad_id = domains[0].tokenizer.pad_id if domains else tokenizer.PAD
  tokens_NxL1 = np.concatenate([tokens_NxL1, np.full((pad, tokens_NxL1.shape[1]), pad_id, np.int32)])
  mask_NxL1 = np.concatenate([mask_NxL1, np.zeros((pad, mask_NxL1.shape[1]), np.float32)])
  domain_N = np.concatenate([domain_N, np.zeros(pad, np.int32)])
  return [{'inputs_BxL': tokens_NxL1[i:i + batch_size, :-1],
           'targets_BxL': tokens_NxL1[i:i + batch_size, 1:],
           'mask_BxL': mask_NxL1[i:i + batch_size, 1:],
           'domain_B': domain_N[i:i + batch_size]}
          for i in range(0, len(domain_N), batch_size)]


def heldout_loss(eval_fn, params, batches, to_global=lambda b: b) -> np.ndarray:
  """Mean held-out loss per domain (NaN for a domain with no held-out tokens)."""
  loss_sum_D = tokens_D = 0.0
  for batch in batches:
    out = eval_fn(params, to_global(batch))
    loss_sum_D = loss_sum_D + np.asarray(out['domain_loss_sum_D'], np.float64)
    tokens_D = tokens_D + np.asarray(out['domain_tokens_D'], np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(tokens_D > 0, loss_sum_D / tokens_D, np.nan)


def generate(graphdef, params, prompts: Sequence[str], max_new: int,
             tok: tokenizer.Tokenizer = tokenizer.BYTES) -> list[str]:
  """Greedy continuations of each prompt (max_new tokens of `tok`), cut at the first EOS."""
  encoded = [tok.encode(p, bos=True) for p in prompts]
  # Prompt length and count are padded up to buckets (powers of two, at least 16 and 8), so a new
  # suite reuses a compiled decoder; padding prompts are a lone BOS and are dropped.
  n, p = _bucket(len(encoded), 8), _bucket(max(len(e) for e in encoded), 16)
  lengths_N = np.ones(n, np.int32)
  prompt_NxP = np.full((n, p), tok.pad_id, np.int32)
  prompt_NxP[:, 0] = tok.bos_id
  for i, e in enumerate(encoded):
    prompt_NxP[i, :len(e)] = e
    lengths_N[i] = len(e)
  out_NxM = np.asarray(decode.greedy_decode(graphdef, params, prompt_NxP, lengths_N, max_new))
  return [tok.decode(row) for row in out_NxM[:len(encoded)]]


def _bucket(size: int, smallest: int) -> int:
  return max(smallest, 1 << (size - 1).bit_length())


def exact_match(graphdef, params, items, max_new: int,
                is_correct=lambda out, target: out.strip() == target.strip(),
                tok: tokenizer.Tokenizer = tokenizer.BYTES) -> float:
  """The share of items whose greedy continuation is_correct (default: equal after stripping)."""
  outputs = generate(graphdef, params, [it.prompt for it in items], max_new, tok)
  return float(np.mean([is_correct(out, it.target) for out, it in zip(outputs, items)]))


def accuracy(graphdef, params, domain, num_items: int,
             tok: tokenizer.Tokenizer = tokenizer.BYTES) -> float:
  """Exact match (after the domain's answer extraction and stripping) on its first items."""
  return exact_match(graphdef, params, domain.items[:num_items], domain.max_decode_len,
                     domain.is_correct, tok)
