"""Tokenizers behind one interface: bytes (the built-in default), Hugging Face `tokenizer.json`, SentencePiece.

`load(spec)` returns the tokenizer a config names (`config.tokenizer`): 'bytes', a `tokenizer.json` file
(or a folder holding one, as a Hugging Face checkpoint does), or a SentencePiece `.model` file. Every
kind gives int32 ids, a vocabulary size, and BOS/EOS/PAD ids:
- bytes: ids 0..255 are UTF-8 bytes, then BOS 256, EOS 257, PAD 258 (vocabulary 259).
- Hugging Face / SentencePiece: the special tokens the file declares (a `tokenizer_config.json` beside a
  `tokenizer.json` is read for bos/eos/pad_token); a tokenizer without a BOS token (Qwen2, GPT-2) frames
  documents with its EOS token instead, and one without PAD pads with EOS (padding never carries loss).
`fingerprint` names a tokenizer in cache keys and run configs: 'bytes', or the kind and a hash of the
file's bytes.
"""

import functools
import hashlib
import json
import os

import numpy as np

from mixing.data import records

# The byte tokenizer's ids, kept as module constants for code and tests that mean bytes specifically.
BOS = 256
EOS = 257
PAD = 258
VOCAB_SIZE = 259

# Special-token names looked for when a tokenizer file does not say which is which, in order.
_BOS_NAMES = ('<|begin_of_text|>', '<s>', '<bos>', '<|bos|>', '[BOS]')
_EOS_NAMES = ('<|end_of_text|>', '</s>', '<eos>', '<|endoftext|>', '<|eos|>', '[EOS]')
_PAD_NAMES = ('<pad>', '<|pad|>', '[PAD]', '<|finetune_right_pad_id|>')


class Tokenizer:
  """encode/decode text to int32 ids; vocab_size, bos_id, eos_id, pad_id; fingerprint for caches."""
  kind: str = ''
  vocab_size: int
  bos_id: int
  eos_id: int
  pad_id: int
  fingerprint: str

  def _encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def _decode(self, ids: list[int]) -> str:
    raise NotImplementedError

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> np.ndarray:
    """The int32 ids of `text`, optionally framed by BOS/EOS."""
    ids = self._encode(text)
    return np.asarray([self.bos_id] * bos + list(ids) + [self.eos_id] * eos, np.int32)

  def decode(self, ids, stop_at_eos: bool = True) -> str:
    """Text of `ids`, dropping BOS/EOS/PAD; stops at the first EOS if asked."""
    ids = np.asarray(ids).reshape(-1).astype(np.int64)
    if stop_at_eos:
      eos_at = np.flatnonzero(ids == self.eos_id)
      if eos_at.size:
        ids = ids[:eos_at[0]]
    special = np.isin(ids, [self.bos_id, self.eos_id, self.pad_id]) | (ids >= self.vocab_size)
    return self._decode([int(i) for i in ids[~special]])

  @property
  def token_dtype(self):
    """The smallest unsigned dtype that holds every id (packed rows are stored in it)."""
    return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.fingerprint}, vocab={self.vocab_size})'


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes plus BOS/EOS/PAD: needs no file."""
  kind = 'bytes'
  vocab_size, bos_id, eos_id, pad_id, fingerprint = VOCAB_SIZE, BOS, EOS, PAD, 'bytes'

  def encode(self, text: str, bos: bool = False, eos: bool = False) -> np.ndarray:
    ids_T = np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int32)
    if bos or eos:
      ids_T = np.concatenate([[BOS] * bos, ids_T, [EOS] * eos]).astype(np.int32)
    return ids_T

  def _decode(self, ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode('utf-8', errors='replace')


def _file_hash(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def _pick(field: str, path: str, declared, names, vocab: dict, fallback=None) -> int:
  """The id of the first of `declared` (a name from tokenizer_config.json) or `names` in vocab."""
  for name in ([declared] if declared else []) + list(names):
    if name in vocab:
      return vocab[name]
  if fallback is not None:
    return fallback
  raise ValueError(f'tokenizer: {path!r} has no {field} token (looked for {list(names)})')


def _special(name) -> str | None:
  """A tokenizer_config.json special-token entry: a string or {'content': ...}."""
  return name.get('content') if isinstance(name, dict) else name


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json`, through the `tokenizers` package (no `transformers`)."""
  kind = 'hf'

  def __init__(self, path: str):
    import tokenizers  # pylint: disable=g-import-not-at-top
    self.path = path
    self._tok = tokenizers.Tokenizer.from_file(path)
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    vocab = self._tok.get_vocab(with_added_tokens=True)
    declared = {}
    config_path = os.path.join(os.path.dirname(path), 'tokenizer_config.json')
    if os.path.exists(config_path):
      with open(config_path) as f:
        declared = json.load(f)
    self.eos_id = _pick('EOS', path, _special(declared.get('eos_token')), _EOS_NAMES, vocab)
    self.bos_id = _pick('BOS', path, _special(declared.get('bos_token')), _BOS_NAMES, vocab,
                        self.eos_id)
    self.pad_id = _pick('PAD', path, _special(declared.get('pad_token')), _PAD_NAMES, vocab,
                        self.eos_id)
    self.fingerprint = f'hf-{_file_hash(path)}'

  def _encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def _decode(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=False)


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model` file, through the `sentencepiece` package."""
  kind = 'sentencepiece'

  def __init__(self, path: str):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    self.path = path
    self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.vocab_size = self._sp.get_piece_size()
    self.eos_id = self._sp.eos_id()
    if self.eos_id < 0:
      raise ValueError(f'tokenizer: {path!r} has no EOS token (eos_id is -1)')
    self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else self.eos_id
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
    self.fingerprint = f'sentencepiece-{_file_hash(path)}'

  def _encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def _decode(self, ids: list[int]) -> str:
    return self._sp.decode(ids)


BYTES = ByteTokenizer()


def file_of(spec: str) -> str | None:
  """The file a tokenizer spec names: the path itself, or a folder's tokenizer.json (else its
  tokenizer.model); None where there is none."""
  if os.path.isdir(spec):
    for name in ('tokenizer.json', 'tokenizer.model'):
      if os.path.isfile(os.path.join(spec, name)):
        return os.path.join(spec, name)
    return None
  return spec if os.path.isfile(spec) else None


@functools.lru_cache(maxsize=8)
def load(spec: str = 'bytes') -> Tokenizer:
  """The tokenizer `spec` names: 'bytes', a tokenizer.json (or its folder), or a SentencePiece .model.

  Raises ValueError naming `tokenizer` and the value for anything else.
  """
  spec = str(spec or 'bytes')
  if spec == 'bytes':
    return BYTES
  if '://' in spec:  # a remote tokenizer: its small files, copied once (records.local_folder)
    spec = records.local_folder(spec, ('tokenizer.json', 'tokenizer.model', 'tokenizer_config.json'))
  path = file_of(spec)
  if path is None:
    raise ValueError(f"tokenizer: {spec!r} is neither 'bytes' nor a tokenizer.json / .model file "
                     'or a folder holding one')
  try:
    if path.endswith('.model'):
      return SentencePieceTokenizer(path)
    return HFTokenizer(path)
  except ValueError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'tokenizer: cannot read {path!r}: {str(e).splitlines()[0]}') from None


# The byte tokenizer's functions under their old names (tests and code that mean bytes).
encode = BYTES.encode
decode = BYTES.decode
