"""Trains a byte-level BPE tokenizer (the `tokenizers` package) on documents: a real subword tokenizer
for users without a tokenizer file.

The result is a folder with `tokenizer.json` (byte-level pre-tokenizer and decoder, so any UTF-8 text
round-trips) and `tokenizer_config.json` naming its special tokens <s> (BOS), </s> (EOS) and <pad>
(PAD), the layout `tokenizer.load` reads and Hugging Face tools accept.
"""

import json
import os
from typing import Iterable

SPECIALS = {'bos_token': '<s>', 'eos_token': '</s>', 'pad_token': '<pad>'}


def train(texts: Iterable[str], vocab_size: int, out_dir: str, min_frequency: int = 2) -> str:
  """Trains on `texts` and writes `out_dir`; returns the tokenizer.json path.

  The vocabulary holds the 256 byte symbols, the 3 special tokens and merges up to `vocab_size`
  (fewer when the text has no more pairs of min_frequency).
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  minimum = 256 + len(SPECIALS)
  if vocab_size < minimum:
    raise ValueError(f'vocab_size: must be at least {minimum} (256 bytes + 3 specials), got '
                     f'{vocab_size}')
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=list(SPECIALS.values()),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, 'tokenizer.json')
  tmp = path + '.tmp'
  tok.save(tmp)
  os.replace(tmp, path)
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
    json.dump(dict(SPECIALS, tokenizer_class='PreTrainedTokenizerFast'), f, indent=1)
  return path
