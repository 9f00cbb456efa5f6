r"""Makes tests/fixtures/hf/<family>/: a tiny random Hugging Face checkpoint of each Llama-family
architecture mixlab imports, with the reference logits of `transformers` on fixed inputs.

  python -m venv /tmp/fixvenv && /tmp/fixvenv/bin/pip install torch==2.13.0 transformers==5.24.0
  /tmp/fixvenv/bin/python tools/make_hf_fixtures.py

Made with torch 2.13.0 (CPU) and transformers 5.24.0; the tests need neither (they read the files).
Each folder: config.json, model.safetensors (llama3: sharded, with model.safetensors.index.json),
inputs.npy (int32 token ids, 2 x 24) and logits.npy (float32, 2 x 24 x vocab; eager attention).
Every parameter is random, norm scales and biases included, so a wrong mapping cannot pass.
"""

import json
import os

import numpy as np
import torch
import transformers

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'fixtures',
                   'hf')
COMMON = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=128, torch_dtype='float32')
FAMILIES = {
    # Llama 2: multi-head attention, untied embeddings.
    'llama2': (transformers.LlamaConfig, dict(num_key_value_heads=4, rms_norm_eps=1e-5,
                                              rope_theta=10000.0)),
    # Llama 3: grouped-query attention, theta 5e5 and llama3 RoPE scaling (original length 16, so
    # the test inputs of 24 tokens reach scaled and interpolated frequencies).
    'llama3': (transformers.LlamaConfig, dict(
        num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                      'high_freq_factor': 4.0, 'original_max_position_embeddings': 16})),
    # Qwen2/2.5: q/k/v biases, tied embeddings (as Qwen2.5-0.5B), theta 1e6.
    'qwen2': (transformers.Qwen2Config, dict(num_key_value_heads=2, rms_norm_eps=1e-6,
                                             rope_theta=1000000.0, tie_word_embeddings=True)),
    # Mistral: GQA, a sliding window longer than any sequence here.
    'mistral': (transformers.MistralConfig, dict(num_key_value_heads=1, rms_norm_eps=1e-5,
                                                 rope_theta=10000.0, sliding_window=128)),
    # SmolLM: the Llama architecture with tied embeddings and 3:1 GQA.
    'smollm': (transformers.LlamaConfig, dict(num_key_value_heads=2, rms_norm_eps=1e-5,
                                              rope_theta=10000.0, tie_word_embeddings=True)),
}
SHARDED = {'llama3'}


def make(name: str, config_cls, extra: dict, seed: int):
  torch.manual_seed(seed)
  config = config_cls(**COMMON, **extra)
  config._attn_implementation = 'eager'  # pylint: disable=protected-access
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation='eager')
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if pname.endswith('norm.weight'):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif pname.endswith('bias'):
        p.copy_(0.1 * torch.randn_like(p))
      else:
        p.copy_(0.08 * torch.randn_like(p))
  model.eval()
  inputs = np.random.default_rng(seed).integers(0, COMMON['vocab_size'], (2, 24)).astype(np.int32)
  with torch.no_grad():
    logits = model(torch.from_numpy(inputs).long()).logits.float().numpy()
  folder = os.path.join(OUT, name)
  os.makedirs(folder, exist_ok=True)
  for old in os.listdir(folder):
    os.remove(os.path.join(folder, old))
  model.save_pretrained(folder, max_shard_size='200KB' if name in SHARDED else '50MB')
  np.save(os.path.join(folder, 'inputs.npy'), inputs)
  np.save(os.path.join(folder, 'logits.npy'), logits.astype(np.float32))
  with open(os.path.join(folder, 'config.json')) as f:
    saved = json.load(f)
  print(f'{name}: {sorted(os.listdir(folder))} model_type={saved["model_type"]} '
        f'params={sum(p.numel() for p in model.parameters()):,}')


def main():
  print(f'torch {torch.__version__}, transformers {transformers.__version__}')
  for seed, (name, (config_cls, extra)) in enumerate(FAMILIES.items()):
    make(name, config_cls, extra, seed)


if __name__ == '__main__':
  main()
