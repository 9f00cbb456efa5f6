"""Defaults for every mixlab training run; experiment configs start from `get_config()` and override."""

import ml_collections

from configs import models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # seeds the model init and the sampler's draws
  config.steps = 300  # optimizer steps
  config.batch_size = 16  # global batch, in sequences; split over the mesh's data axis and processes
  config.microbatches = 1  # gradient accumulation: each step runs batch_size / microbatches at a time
  config.seq_len = 128  # tokens per training sequence (documents are packed)
  config.eval_every = 100  # steps between evaluations (held-out loss; accuracy where there are items)
  config.eval_batches = 2  # held-out batches (of batch_size sequences) per domain at each evaluation
  config.eval_items = 16  # evaluation items per domain scored by greedy decoding (0: loss only)
  config.checkpoint_every = 100  # steps between checkpoints (and one at the end)
  config.keep_checkpoints = 3  # checkpoints kept; older ones are deleted
  config.log_every = 10  # steps between metrics lines (metrics.jsonl, TensorBoard)
  config.progress_seconds = 5.0  # seconds between progress lines on stdout
  # What initializes the model: '' (random init), a mixlab run's workdir (its latest model), or
  # 'hf:DIR', a Hugging Face Llama/Qwen2/Mistral/SmolLM checkpoint (config.json + safetensors; the
  # model's shape is then the checkpoint's and `model` is not read).
  config.init_from = ''
  # '' (the model's own: an hf: checkpoint's tokenizer, else bytes), 'bytes' (UTF-8 bytes +
  # BOS/EOS/PAD, vocabulary 259), a Hugging Face tokenizer.json (or a folder holding one) or a
  # SentencePiece .model; a new model's vocabulary follows it. `python -m experiments.tokenizer
  # train` makes a BPE one from domains.
  config.tokenizer = ''

  # The mixture: 'name[:weight],...'. Built-in names: see mixing/data/domains.py; a name listed in
  # `domain_files` is read from that file instead. The weights are the static mixer's.
  config.domains = 'code/python:1,prose/plays:1,math/easy:1'
  # name -> {path (globs), fields ('' text, 'field', 'input,target'), format, ...}: load.FileDomainSpec;
  # on the command line: --domain=NAME=GLOB[@field|@input,target][:weight] (added to `domains`).
  config.domain_files = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  config.data.seed = 0  # seeds the domains' contents: generated documents and held-out splits
  config.data.dir = '/tmp/mixlab_data'  # cache of built file domains (ArrayRecord shards); may be gs://
  config.data.num_train = 4000  # generated domains: training documents
  config.data.num_heldout = 200  # generated domains: held-out documents (eval items come from these)
  config.data.chunk_chars = 4096  # document size: characters (corpus domains), UTF-8 bytes (text files)
  config.data.build_workers = 0  # processes that build file domains (0: one per CPU core)
  config.data.loss_on_prompt = True  # False: only completions (answers) carry loss, as in SFT
  # How each batch's domains are drawn from the weights: 'iid' (independent draws) or 'quasi' (a
  # golden-ratio low-discrepancy sequence: every stretch of steps gets its weights' share to within
  # a few examples; mixing/data/sampler.py).
  config.data.draws = 'iid'

  config.model = models.get_config('quickstart')  # presets and per-field overrides: models/presets.py

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 3e-3  # peak learning rate of AdamW
  config.optimizer.warmup_steps = 20  # linear warmup from 0 to the peak
  config.optimizer.weight_decay = 0.1  # decoupled weight decay
  config.optimizer.clip_norm = 1.0  # global gradient-norm clip
  config.optimizer.b1 = 0.9  # Adam beta1
  config.optimizer.b2 = 0.95  # Adam beta2

  config.mixer = ml_collections.ConfigDict()
  # static (the weights in `domains`), uniform, proportional (to tokens), temperature, doremi, odm,
  # regmix, agent, taskpgm (mixing/mixers/). Each method's own fields are in config.mixer.<name> below.
  config.mixer.name = 'static'
  config.mixer.update_every = 50  # steps between Mixer updates (online mixers re-weight here)
  config.mixer.agent_dir = ''  # agent: a trained agent's directory (experiments.train_agent)

  config.mixer.temperature = ml_collections.ConfigDict()
  config.mixer.temperature.temperature = 2.0  # w_d ~ n_d^(1/T): 1 is proportional, large T uniform
  config.mixer.temperature.cap = 0.0  # cap on n_d in tokens before the power, as T5 (0: no cap)

  config.mixer.doremi = ml_collections.ConfigDict()
  config.mixer.doremi.eta = 1.0  # step size of the exponentiated-gradient update of alpha
  config.mixer.doremi.smoothing = 1e-3  # s: alpha <- (1 - s) alpha + s uniform
  config.mixer.doremi.proxy_steps = 0  # steps of the reference and proxy runs (0: config.steps)
  config.mixer.doremi.reference_weights = ''  # 'name:w,...' of the reference run ('': uniform)
  config.mixer.doremi.model = ''  # model preset of reference and proxy ('': the main model)

  config.mixer.odm = ml_collections.ConfigDict()
  config.mixer.odm.smoothing = 0.9  # moving average of the importance-weighted rewards
  config.mixer.odm.step_scale = 1.0  # multiplies the exponential-weights step (1: the paper's)
  config.mixer.odm.time_scale = 1.0  # multiplies the step count t of eps_t (1: the paper's)

  config.mixer.regmix = ml_collections.ConfigDict()
  config.mixer.regmix.num_proxies = 0  # N proxy runs (0: 4 x the number of domains)
  config.mixer.regmix.proxy_steps = 0  # steps of each proxy (0: config.steps)
  config.mixer.regmix.model = 'tiny'  # model preset of the proxies ('': the main model)
  config.mixer.regmix.target = ''  # domains whose mean held-out loss is minimized ('': all)
  config.mixer.regmix.samples = 100_000  # mixtures scored by the regressor in the search
  config.mixer.regmix.top_k = 100  # best-scored mixtures averaged into the result
  config.mixer.regmix.regressor = 'cv'  # 'cv': k-fold CV on the proxies; 'lightgbm': RegMix's own

  config.mixer.taskpgm = ml_collections.ConfigDict()
  # taskpgm (needs `continual` and `taskpgm` sections): where TaskPGM's mixture over the run's domains
  # is computed and cached ('': WORKDIR/taskpgm/domain_mixture)
  config.mixer.taskpgm.dir = ''

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # devices on the data axis (-1: all devices not used by `model`)
  config.mesh.model = 1  # devices on the model (tensor-parallel) axis
  config.mesh.fsdp = False  # also shard parameters and optimizer state over the data axis (FSDP)
  return config
