"""Hugging Face checkpoints of the Llama family <-> mixlab's Transformer, through safetensors only.

Llama 2/3 (llama3 RoPE scaling), Qwen2/2.5 (q/k/v biases), Mistral and SmolLM share one layout:
`model.embed_tokens`, per layer `input_layernorm`, `self_attn.{q,k,v,o}_proj`,
`post_attention_layernorm`, `mlp.{gate,up,down}_proj`, then `model.norm` and `lm_head` (absent when
the embeddings are tied). A Linear's weight is (out, in); mixlab's kernels are (in, out...), with
heads split: q (D, H, K), fused q/k/v (D, 3, H, K), k/v (D, 2, G, K), o (H, K, D).

`load_params` reads each parameter straight into its shards: every device's callback reads only the
rows and columns of its own shard from the (possibly sharded, `model.safetensors.index.json`) files,
so a model never needs its full size in host memory. `export` writes the same layout back
(config.json and safetensors, sharded above `max_shard_bytes`).
"""

import json
import os

import jax
import numpy as np

from models import transformer

FAMILIES = ('llama', 'qwen2', 'mistral')
INDEX = 'model.safetensors.index.json'


def _fail(field: str, value, why: str):
  raise ValueError(f'hf config {field}: {why}, got {value!r}')


def read_config(folder: str) -> dict:
  path = os.path.join(folder, 'config.json')
  if not os.path.isfile(path):
    raise ValueError(f'init_from: no Hugging Face config.json in {folder!r}')
  with open(path) as f:
    return json.load(f)


def rope_settings(hf: dict) -> tuple[float, tuple]:
  """(theta, llama3 scaling tuple or ()) from `rope_parameters` (transformers 5) or the older
  `rope_theta` + `rope_scaling`."""
  params = dict(hf.get('rope_parameters') or {})
  params.setdefault('rope_theta', hf.get('rope_theta', 10000.0))
  params.update(hf.get('rope_scaling') or {})
  kind = params.get('rope_type', params.get('type', 'default'))
  if kind == 'default':
    return float(params['rope_theta']), ()
  if kind != 'llama3':
    _fail('rope_type', kind, "only 'default' and 'llama3' RoPE are supported")
  return float(params['rope_theta']), (float(params['factor']), float(params['low_freq_factor']),
                                       float(params['high_freq_factor']),
                                       float(params['original_max_position_embeddings']))


def model_config(hf: dict, max_len: int, **overrides) -> transformer.ModelConfig:
  """The ModelConfig of a Hugging Face config.json (overrides: e.g. dtype, param_dtype)."""
  kind = hf.get('model_type')
  if kind not in FAMILIES:
    _fail('model_type', kind, f'supported: {", ".join(FAMILIES)}')
  if hf.get('hidden_act', 'silu') != 'silu':
    _fail('hidden_act', hf['hidden_act'], "mixlab's MLP is SwiGLU ('silu')")
  if hf.get('mlp_bias') or (kind != 'qwen2' and hf.get('attention_bias')):
    _fail('attention_bias/mlp_bias', True, 'biases are supported on q/k/v of Qwen2 only')
  d, h = hf['hidden_size'], hf['num_attention_heads']
  if hf.get('head_dim') not in (None, d // h) or d % h:
    _fail('head_dim', hf.get('head_dim'), f'must be hidden_size / num_attention_heads = {d / h}')
  window = hf.get('sliding_window') if kind == 'mistral' or hf.get('use_sliding_window') else None
  if window and window < max_len:
    _fail('sliding_window', window, f'sequences of {max_len} tokens would need a window; mixlab '
          'attends to all previous tokens')
  theta, scaling = rope_settings(hf)
  g = hf.get('num_key_value_heads') or h
  return transformer.ModelConfig(
      vocab_size=hf['vocab_size'], d_model=d, num_layers=hf['num_hidden_layers'], num_heads=h,
      num_kv_heads=0 if g == h else g, d_ff=hf['intermediate_size'], max_len=max_len,
      rope_base=theta, rope_scaling=scaling, norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
      qkv_bias=kind == 'qwen2', tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
      **overrides)


class _Files:
  """The checkpoint's tensors by name, over one or several safetensors files, opened lazily."""

  def __init__(self, folder: str):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    self._open = lambda path: safe_open(path, framework='numpy')
    index = os.path.join(folder, INDEX)
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)['weight_map']
      self.where = {name: os.path.join(folder, file) for name, file in weight_map.items()}
    else:
      single = os.path.join(folder, 'model.safetensors')
      if not os.path.isfile(single):
        raise ValueError(f'init_from: no model.safetensors or {INDEX} in {folder!r}')
      with self._open(single) as f:
        self.where = {name: single for name in f.keys()}
    self._handles = {}

  def read(self, name: str, *index) -> np.ndarray:
    """tensor[index] (slices), reading only those elements."""
    if name not in self.where:
      raise ValueError(f'init_from: the checkpoint has no tensor {name!r}')
    path = self.where[name]
    if path not in self._handles:
      self._handles[path] = self._open(path).__enter__()
    return self._handles[path].get_slice(name)[index]


def _span(s: slice, n: int) -> tuple[int, int]:
  start, stop, _ = s.indices(n)
  return start, stop


def _heads_rows(files, name, sh, sk, h, k, cols=slice(None)) -> np.ndarray:
  """Rows h*K+k of a (H*K, ...) tensor for heads sh and dims sk, as (nh, nk, ...)."""
  h0, h1 = _span(sh, h)
  heads = slice(h0 * k, h1 * k)
  rows = files.read(name, heads) if cols is None else files.read(name, heads, cols)
  return rows.reshape(h1 - h0, k, *rows.shape[1:])[:, sk]


def _readers(cfg: transformer.ModelConfig) -> dict:
  """mixlab parameter path -> (read(files, index) -> the shard at index)."""
  h, g, k, v = cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.vocab_size
  def proj_T(name, heads):  # (D, heads, K) from a (heads*K, D) weight
    return lambda f, sd, sh, sk: np.transpose(_heads_rows(f, name, sh, sk, heads, k, sd), (2, 0, 1))
  def stacked(names, heads):  # (D, n, heads, K)
    return lambda f, sd, sn, sh, sk: np.stack(
        [proj_T(names[j], heads)(f, sd, sh, sk) for j in range(len(names))[sn]], axis=1)
  def bias(names, heads):  # (n, heads, K) from (heads*K,) vectors
    return lambda f, sn, sh, sk: np.stack(
        [_heads_rows(f, names[j], sh, sk, heads, k, None) for j in range(len(names))[sn]])
  def vocab_rows(name):  # (Vp, D) from (V, D); padded rows are zero
    def read(f, sv, sd):
      v0, v1 = _span(sv, cfg.padded_vocab)
      d0, d1 = _span(sd, cfg.d_model)
      out = np.zeros((v1 - v0, d1 - d0), np.float32)
      if v0 < v:
        rows = f.read(name, slice(v0, min(v1, v)), sd)
        out = out.astype(rows.dtype)
        out[:len(rows)] = rows
      return out
    return read
  out = {'embed_VxD': vocab_rows('model.embed_tokens.weight'),
         'final_norm.scale': lambda f, sd: f.read('model.norm.weight', sd)}
  if not cfg.tie_embeddings:
    read_head = vocab_rows('lm_head.weight')
    out['unembed_DxV'] = lambda f, sd, sv: read_head(f, sv, sd).T
  for i in range(cfg.num_layers):
    p, m = f'model.layers.{i}.', f'blocks.{i}.'
    q, kk, vv = (f'{p}self_attn.{x}_proj' for x in 'qkv')
    out[m + 'attn_norm.scale'] = lambda f, sd, n=p + 'input_layernorm.weight': f.read(n, sd)
    out[m + 'mlp_norm.scale'] = lambda f, sd, n=p + 'post_attention_layernorm.weight': f.read(n, sd)
    if cfg.grouped:
      out[m + 'attn.q_DxHxK'] = proj_T(q + '.weight', h)
      out[m + 'attn.kv_Dx2xGxK'] = stacked([kk + '.weight', vv + '.weight'], g)
      if cfg.qkv_bias:
        out[m + 'attn.q_bias_HxK'] = lambda f, sh, sk, b=bias([q + '.bias'], h): b(
            f, slice(None), sh, sk)[0]
        out[m + 'attn.kv_bias_2xGxK'] = bias([kk + '.bias', vv + '.bias'], g)
    else:
      out[m + 'attn.qkv_Dx3xHxK'] = stacked([q + '.weight', kk + '.weight', vv + '.weight'], h)
      if cfg.qkv_bias:
        out[m + 'attn.qkv_bias_3xHxK'] = bias([q + '.bias', kk + '.bias', vv + '.bias'], h)
    # o_proj (D, H*K) -> (H, K, D): columns of heads sh.
    out[m + 'attn.out_HxKxD'] = lambda f, sh, sk, sd, n=p + 'self_attn.o_proj.weight': np.transpose(
        _heads_rows_T(f, n, sh, sk, h, k, sd), (1, 2, 0))
    out[m + 'mlp.gate_up_Dx2xF'] = lambda f, sd, sn, sf, ns=(p + 'mlp.gate_proj.weight',
                                                            p + 'mlp.up_proj.weight'): np.stack(
        [f.read(ns[j], sf, sd).T for j in range(2)[sn]], axis=1)
    out[m + 'mlp.down_FxD'] = lambda f, sf, sd, n=p + 'mlp.down_proj.weight': f.read(n, sd, sf).T
  return out


def _heads_rows_T(files, name, sh, sk, h, k, sd) -> np.ndarray:
  """Columns h*K+k of a (D, H*K) tensor for heads sh, dims sk and rows sd, as (nd, nh, nk)."""
  h0, h1 = _span(sh, h)
  cols = files.read(name, sd, slice(h0 * k, h1 * k))
  return cols.reshape(cols.shape[0], h1 - h0, k)[:, :, sk]


def load_params(folder: str, cfg: transformer.ModelConfig, abstract_params):
  """The checkpoint's parameters in `abstract_params`' structure, dtypes and shardings (leaves:
  jax.ShapeDtypeStruct or arrays; without a sharding, the first device)."""
  files, readers = _Files(folder), _readers(cfg)

  if cfg.scan_layers:  # 'blocks.X' stacks the layers' 'blocks.<i>.X' on a leading axis
    for name in [n for n in readers if n.startswith('blocks.0.')]:
      rest = name[len('blocks.0.'):]
      readers['blocks.' + rest] = lambda f, sl, *index, rest=rest: np.stack(
          [readers[f'blocks.{i}.{rest}'](f, *index) for i in range(cfg.num_layers)[sl]])

  def load(path, leaf):
    name = transformer.path_name(path)
    if name not in readers:
      raise ValueError(f'init_from: mixlab parameter {name!r} has no Hugging Face tensor')
    sharding = getattr(leaf, 'sharding', None) or jax.sharding.SingleDeviceSharding(
        jax.devices()[0])
    def shard(index):
      index = tuple(index) + (slice(None),) * (len(leaf.shape) - len(index))
      return np.asarray(readers[name](files, *index), np.float32).astype(leaf.dtype)
    return jax.make_array_from_callback(tuple(leaf.shape), sharding, shard)
  return jax.tree_util.tree_map_with_path(load, abstract_params)


def hf_tensors(params, cfg: transformer.ModelConfig) -> dict[str, np.ndarray]:
  """mixlab parameters (gathered) -> the Hugging Face tensors, by name."""
  flat = {name: np.asarray(x) for name, x in transformer.flat_params(params).items()}
  d, v = cfg.d_model, cfg.vocab_size
  rows = lambda x: x.reshape(d, -1).T  # (D, heads, K) -> (heads*K, D)
  out = {'model.embed_tokens.weight': flat['embed_VxD'][:v], 'model.norm.weight':
         flat['final_norm.scale']}
  if not cfg.tie_embeddings:
    out['lm_head.weight'] = flat['unembed_DxV'][:, :v].T
  for i in range(cfg.num_layers):
    p, m = f'model.layers.{i}.', f'blocks.{i}.'
    a = p + 'self_attn.'
    out[p + 'input_layernorm.weight'] = flat[m + 'attn_norm.scale']
    out[p + 'post_attention_layernorm.weight'] = flat[m + 'mlp_norm.scale']
    if cfg.grouped:
      q, kv = flat[m + 'attn.q_DxHxK'], flat[m + 'attn.kv_Dx2xGxK']
      weights = (rows(q), rows(kv[:, 0]), rows(kv[:, 1]))
      if cfg.qkv_bias:
        kv_b = flat[m + 'attn.kv_bias_2xGxK']
        biases = (flat[m + 'attn.q_bias_HxK'].reshape(-1), kv_b[0].reshape(-1),
                  kv_b[1].reshape(-1))
    else:
      qkv = flat[m + 'attn.qkv_Dx3xHxK']
      weights = tuple(rows(qkv[:, j]) for j in range(3))
      if cfg.qkv_bias:
        biases = tuple(b.reshape(-1) for b in flat[m + 'attn.qkv_bias_3xHxK'])
    for j, x in enumerate('qkv'):
      out[f'{a}{x}_proj.weight'] = weights[j]
      if cfg.qkv_bias:
        out[f'{a}{x}_proj.bias'] = biases[j]
    out[a + 'o_proj.weight'] = flat[m + 'attn.out_HxKxD'].reshape(-1, d).T
    gate_up = flat[m + 'mlp.gate_up_Dx2xF']
    out[p + 'mlp.gate_proj.weight'] = gate_up[:, 0].T
    out[p + 'mlp.up_proj.weight'] = gate_up[:, 1].T
    out[p + 'mlp.down_proj.weight'] = flat[m + 'mlp.down_FxD'].T
  return {name: np.ascontiguousarray(x) for name, x in out.items()}


def hf_config(cfg: transformer.ModelConfig, base: dict | None = None) -> dict:
  """config.json for `cfg`: `base` (e.g. the imported model's config) with mixlab's shapes."""
  out = dict(base or {})
  kind = out.get('model_type') or ('qwen2' if cfg.qkv_bias else 'llama')
  rope = {'rope_theta': cfg.rope_base, 'rope_type': 'llama3' if cfg.rope_scaling else 'default'}
  if cfg.rope_scaling:
    rope.update(zip(('factor', 'low_freq_factor', 'high_freq_factor',
                     'original_max_position_embeddings'), cfg.rope_scaling))
    rope['original_max_position_embeddings'] = int(rope['original_max_position_embeddings'])
  out.update(
      model_type=kind, architectures=[{'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM',
                                       'mistral': 'MistralForCausalLM'}[kind]],
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim, hidden_act='silu',
      rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope,
      max_position_embeddings=max(out.get('max_position_embeddings', 0), cfg.max_len))
  out.pop('rope_scaling', None)
  out.pop('rope_theta', None)
  return out


def export(params, cfg: transformer.ModelConfig, out_dir: str, base_config: dict | None = None,
           max_shard_bytes: int = 5 << 30) -> list[str]:
  """Writes out_dir/config.json and the safetensors (with an index above max_shard_bytes); returns
  the files written. Each file is written beside and renamed into place."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  tensors = hf_tensors(params, cfg)
  shards, size = [[]], 0
  for name in sorted(tensors):
    nbytes = tensors[name].nbytes
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  os.makedirs(out_dir, exist_ok=True)
  names = (['model.safetensors'] if len(shards) == 1 else
           [f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))])
  def write(file, fill):
    path = os.path.join(out_dir, file)
    fill(path + '.tmp')
    os.replace(path + '.tmp', path)
  for file, shard in zip(names, shards):
    write(file, lambda tmp, s=shard: save_file({n: tensors[n] for n in s}, tmp,
                                               metadata={'format': 'pt'}))
  if len(shards) > 1:
    index = {'metadata': {'total_size': sum(t.nbytes for t in tensors.values())},
             'weight_map': {n: file for file, s in zip(names, shards) for n in s}}
    write(INDEX, lambda tmp: _dump(index, tmp))
  write('config.json', lambda tmp: _dump(hf_config(cfg, base_config), tmp))
  return names + ([INDEX] if len(shards) > 1 else []) + ['config.json']


def _dump(obj, path):
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2)
