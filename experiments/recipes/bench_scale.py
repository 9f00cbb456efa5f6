"""Scale benchmark: a 1B-parameter Llama-shaped model's train step on 8 forced CPU devices, from
abstract shapes only, and decoding with and without the prefill.

  python -m experiments.bench --only=scale

Memory: `jax.jit(train_step).lower(...).compile().memory_analysis()` per device (arguments + outputs
+ temporaries - aliased donations) for each of plain data parallelism, FSDP, remat, both, and both
in bf16 compute; nothing of that size is allocated. Compile time: lowering + compiling the same step
with per-layer blocks and with scanned layers at 16 and 32 layers. The 8 devices are forced in a
child process (XLA_FLAGS must be set before JAX starts). Decoding: items/s of exact-match greedy
decoding of BIG-Bench-Hard prompts (the built-in bbh/* suites' own phrasing) with the quickstart
model, the earlier single-token decoder against the prefill, in this process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import step as step_lib
from models import decode
from models import sharding as sharding_lib
from models import transformer

# Llama 3.2 1B's shape (vocabulary 128,256, tied embeddings, GQA 32/8, RoPE 5e5).
LLAMA_1B = transformer.ModelConfig(vocab_size=128_256, d_model=2048, num_layers=16, num_heads=32,
                                   num_kv_heads=8, d_ff=8192, max_len=2048, rope_base=500_000.0,
                                   tie_embeddings=True, norm_eps=1e-5)
BATCH, SEQ_LEN, DEVICES = 8, 2048, 8
MEMORY_ROWS = (('plain (data parallel)', {}, False), ('FSDP', {}, True),
               ('remat full', {'remat': 'full'}, False),
               ('FSDP + remat full', {'remat': 'full'}, True),
               ('FSDP + remat full, bf16 compute', {'remat': 'full', 'dtype': jnp.bfloat16}, True))


def _compiled(cfg, fsdp: bool):
  """(compiled train step, seconds to lower + compile) on a (DEVICES, 1) mesh."""
  mesh = sharding_lib.make_mesh(DEVICES, 1)
  tx = step_lib.make_optimizer(1e-4, 100, 1000)

  def init():
    params = nnx.split(transformer.Transformer(cfg, rngs=nnx.Rngs(0)))[1]
    return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0))))
  abstract = jax.eval_shape(init)
  sharding = sharding_lib.state_shardings(abstract, mesh, sharding_lib.rules(fsdp))
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                       sharding)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((BATCH, SEQ_LEN), dtype, sharding=batch_sharding)
           for k, dtype in (('inputs_BxL', jnp.int32), ('targets_BxL', jnp.int32),
                            ('mask_BxL', jnp.float32))}
  batch['domain_B'] = jax.ShapeDtypeStruct((BATCH,), jnp.int32, sharding=batch_sharding)
  step = step_lib.jit_train_step(mesh, graphdef, sharding, tx, 1)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return compiled, time.perf_counter() - start


def worker() -> dict:
  """Runs in the child with 8 devices: memory rows and compile times."""
  cfg = dataclasses.replace(LLAMA_1B, scan_layers=True)
  params = transformer.param_count(nnx.eval_shape(lambda: transformer.Transformer(
      cfg, rngs=nnx.Rngs(0))))
  memory = []
  for name, fields, fsdp in MEMORY_ROWS:
    compiled, _ = _compiled(dataclasses.replace(cfg, **fields), fsdp)
    m = compiled.memory_analysis()
    memory.append({'name': name, 'arguments': m.argument_size_in_bytes,
                   'temp': m.temp_size_in_bytes, 'outputs': m.output_size_in_bytes,
                   'total': m.argument_size_in_bytes + m.output_size_in_bytes
                   + m.temp_size_in_bytes - m.alias_size_in_bytes})
  compile_s = []
  for layers in (16, 32):
    row = {'layers': layers}
    for scan in (False, True):
      one = dataclasses.replace(LLAMA_1B, num_layers=layers, scan_layers=scan, remat='full')
      row['scan' if scan else 'unrolled'] = _compiled(one, True)[1]
    compile_s.append(row)
  return {'params': params, 'memory': memory, 'compile': compile_s}


def _bbh_prompts(n: int, shots: int = 3) -> list[str]:
  """3-shot prompts, as BIG-Bench-Hard is evaluated: three answered items of the task, then one."""
  from mixing.data import domains as domains_lib  # pylint: disable=g-import-not-at-top
  opts = domains_lib.BuiltinOptions(num_train=1, num_heldout=n + shots, num_eval=n + shots)
  prompts = []
  for name in ('bbh/date_understanding', 'bbh/logical_deduction_three_objects',
               'bbh/penguins_in_a_table', 'bbh/temporal_sequences'):
    items = domains_lib.builtin_domain(name, 0, opts).items
    shown = '\n\n'.join(f'{it.prompt} {it.target}' for it in items[:shots])
    prompts += [f'{shown}\n\n{it.prompt}' for it in items[shots:]]
  return prompts[::4][:n] + prompts[1::4][:max(0, n - len(prompts[::4]))]


def decoding(n: int = 16, max_new: int = 8, repeats: int = 2) -> dict:
  """Items/s of the stepwise decoder and of the prefill on the same bucketed prompts."""
  from mixing.data import tokenizer  # pylint: disable=g-import-not-at-top
  prompts = _bbh_prompts(n)
  encoded = [tokenizer.BYTES.encode(p, bos=True) for p in prompts]
  length = 1 << (max(map(len, encoded)) - 1).bit_length()
  prompt_NxP = np.full((len(encoded), length), tokenizer.PAD, np.int32)
  lengths_N = np.array([len(e) for e in encoded], np.int32)
  for i, e in enumerate(encoded):
    prompt_NxP[i, :len(e)] = e
  graphdef, params = nnx.split(transformer.Transformer(transformer.quickstart(), rngs=nnx.Rngs(0)))
  out = {'items': len(prompts), 'mean_prompt_tokens': float(lengths_N.mean()),
         'padded_to': length, 'max_new': max_new}
  results = {}
  for name, fn in (('stepwise', decode.greedy_decode_stepwise), ('prefill', decode.greedy_decode)):
    results[name] = np.asarray(fn(graphdef, params, prompt_NxP, lengths_N, max_new))  # compile
    best = min(_timed(fn, graphdef, params, prompt_NxP, lengths_N, max_new)
               for _ in range(repeats))
    out[name] = len(prompts) / best
  out['same_tokens'] = bool((results['stepwise'] == results['prefill']).all())
  return out


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def report() -> str:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}',
             JAX_PLATFORMS='cpu')
  child = subprocess.run([sys.executable, '-m', 'experiments.recipes.bench_scale'], env=env,
                         capture_output=True, text=True, check=False)
  if child.returncode:
    raise RuntimeError(f'bench_scale worker failed:\n{child.stderr[-3000:]}')
  w = json.loads(child.stdout.strip().splitlines()[-1])
  gib = lambda b: f'{b / 2**30:.2f}'
  base = w['memory'][0]['total']
  lines = [f'### Scale: a {w["params"] / 1e9:.2f}B-parameter Llama-shaped model (Llama 3.2 1B: '
           f'd 2048, 16 layers, GQA 32/8, vocabulary 128,256), {DEVICES} forced CPU devices, '
           f'global batch {BATCH} x {SEQ_LEN} tokens, AdamW; abstract shapes only', '',
           '| train step | arguments GiB | temporaries GiB | total GiB per device | vs plain |',
           '|---|---:|---:|---:|---:|']
  for m in w['memory']:
    lines.append(f'| {m["name"]} | {gib(m["arguments"])} | {gib(m["temp"])} | '
                 f'{gib(m["total"])} | {m["total"] / base:.2f}x |')
  lines += ['', '| layers | compile s, per-layer blocks | compile s, scanned | ratio |',
            '|---:|---:|---:|---:|']
  for c in w['compile']:
    lines.append(f'| {c["layers"]} | {c["unrolled"]:.1f} | {c["scan"]:.1f} | '
                 f'{c["unrolled"] / c["scan"]:.1f}x |')
  d = decoding()
  lines += ['', f'Decoding {d["items"]} 3-shot BIG-Bench-Hard prompts (mean {d["mean_prompt_tokens"]:.0f} '
            f'byte tokens, padded to {d["padded_to"]}), {d["max_new"]} new tokens, quickstart model, '
            f'this process (1 device); same tokens: {d["same_tokens"]}', '',
            '| decoder | items/s | vs stepwise |', '|---|---:|---:|',
            f'| stepwise (every prompt token a step) | {d["stepwise"]:.1f} | 1.00x |',
            f'| prefill + scan over new tokens | {d["prefill"]:.1f} | '
            f'{d["prefill"] / d["stepwise"]:.2f}x |']
  return '\n'.join(lines)


if __name__ == '__main__':
  print(json.dumps(worker()))
