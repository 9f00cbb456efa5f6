"""TaskPGM over seeds and two model families (experiments/recipes/taskpgm_seeds.py).

The pool: BBH-format tasks, near-duplicates of some in other phrasings, math levels, a noise task
and tasks unrelated to the suites (prose, code, synthetic text), of very different sizes
(size_spread); `:mislabeled` adds mislabeled copies of some BBH tasks, `:skewed` copies whose labels
collapsed to one class; `:learnable` evaluates on the 6 suites fine-tuning moves, `:short` on the
same under a 30-step fine-tuning budget, `:precise` as `:short` on 4x the evaluation items
(`:precise10`: on 10 seeds). The evaluation suite: the BBH tasks (plus any `eval_files`), each split
by a seeded split into a validation part (the only part any choice looks at: the unary gains, the
probes, hyperparameter selection) and a test part (read once, reported).
"""

import ml_collections

from configs import base
from configs import models

BBH_TASKS = ('boolean_expressions', 'date_understanding', 'dyck_languages', 'formal_fallacies',
             'geometric_shapes', 'hyperbaton', 'logical_deduction_three_objects',
             'multistep_arithmetic_two', 'navigate', 'object_counting', 'penguins_in_a_table',
             'reasoning_about_colored_objects', 'temporal_sequences',
             'tracking_shuffled_objects', 'web_of_lies', 'word_sorting')
BBH = ','.join(f'bbh/{t}' for t in BBH_TASKS)
# Tasks unrelated to the BBH suites, as generic text is in real instruction pools.
UNRELATED = ('prose/poems', 'code/python', 'synthetic/copy', 'synthetic/markov')
# BBH tasks that also come as a mislabeled copy (other items, every answer wrong) in the
# `:mislabeled` pool, or as a skewed copy (other items, every answer the most common one) in the
# `:skewed` pool: the noisy collections real pools hold. Chosen on the development seeds as
# suites that fine-tuning moves.
MISLABELED = ('dyck_languages', 'reasoning_about_colored_objects', 'date_understanding',
              'logical_deduction_three_objects', 'navigate', 'multistep_arithmetic_two')
REPHRASED = ('boolean_expressions', 'navigate', 'web_of_lies', 'word_sorting', 'object_counting',
             'date_understanding', 'hyperbaton', 'temporal_sequences')
# The suites fine-tuning moves at this scale, chosen on development seed 30 (the `:skewed` pool, both
# families) before any `:learnable` run: uniform's test accuracy over the base model's >= +0.03 on
# both families. The other 10 lift by less than the paired CIs of a 5-seed run (README: TaskPGM).
LEARNABLE = ('date_understanding', 'dyck_languages', 'multistep_arithmetic_two',
             'penguins_in_a_table', 'reasoning_about_colored_objects', 'temporal_sequences')
LEARNABLE_SUITES = ','.join(f'bbh/{task}' for task in LEARNABLE)
POOL = ','.join([BBH] + [f'rephrase/bbh/{t}' for t in REPHRASED]
                + ['variant1/bbh/navigate', 'variant1/bbh/formal_fallacies', 'math/easy',
                   'math/medium', 'math/hard', 'noise/qa']
                + list(UNRELATED))  # 34 tasks: 26 BBH-format, 8 that the suites do not ask for


# The named variants (`--config=configs/taskpgm.py:<variant>`); n100 is a one-seed size run.
VARIANTS = ('n100', 'mislabeled', 'skewed', 'learnable', 'short', 'precise', 'precise10')


def pool_100() -> str:
  """A 100-task pool: the 16 BBH tasks, their rephrasings and 4 variants each, 3 math levels and
  noise (`--config=configs/taskpgm.py:n100`)."""
  return ','.join([BBH] + [f'rephrase/bbh/{t}' for t in BBH_TASKS]
                  + [f'variant{k}/bbh/{t}' for k in range(1, 5) for t in BBH_TASKS]
                  + ['math/easy', 'math/medium', 'math/hard', 'noise/qa'])


def get_config(variant: str = ''):
  config = base.get_config()
  config.taskpgm = t = ml_collections.ConfigDict()
  t.tasks = POOL  # the task pool
  t.eval_tasks = BBH  # pool tasks whose evaluation items form the evaluation suite
  t.eval_files = ''  # extra suites: comma-separated JSONL / BBH-JSON files
  t.val_fraction = 0.5  # share of each suite's items in its validation part
  # One whole pipeline per seed (config.seed and config.data.seed). Seeds 0-4: development (the
  # selection grid below was settled on them); 5-9: the first report, with the unary read on 32
  # items per suite (its mixtures kept the unrelated tasks in, which led to unary_items = 0); 10-14,
  # reported now, were not looked at before that choice. (15-19: the `:mislabeled` pool's seed 15
  # potentials were read, so a report on it uses 20-24.)
  t.seeds = '10,11,12,13,14'
  t.families = 'quickstart,gqa'  # model families, each a model section in family_models
  t.family_models = ml_collections.ConfigDict()
  t.family_models.quickstart = models.get_config('quickstart')  # 2 layers, d_model 128, MHA
  # 3 layers, d_model 96, 6 query heads sharing 2 key/value heads, RoPE base 5e5
  t.family_models.gqa = models.get_config('tiny_gqa')
  t.sources = 'code/python,prose/plays'  # what the base model is pre-trained on
  t.base_steps = 300  # base model pre-training steps
  t.base_learning_rate = 3e-3  # base model peak learning rate
  t.base_root = '/tmp/mixlab_base'  # base models are cached here, by their config
  t.single_task_steps = 40  # steps of each single-task fine-tune (one population)
  t.probes = 64  # P probe inputs, drawn from the validation parts
  t.probe_top_k = 0  # V kept per probe position: the base model's top-k tokens + the rest (0: all)
  # u_i, each task's utility measured on the validation parts only (scaled to max |u| = 1):
  # 'val_choice' (single-task model's multiple-choice accuracy gain over the base, averaged over the
  # suites), 'val_acc' (the same with exact match: slow, decodes every validation item per task),
  # 'val_loss' (answer-token NLL gain), 'size' (log10 of its training tokens).
  t.unary = 'val_choice'
  # Validation items per suite the unary gains and probes read (0: all). The first report read 32, a
  # noisy unary; reading all of them did not make TaskPGM beat uniform either (README: TaskPGM).
  t.unary_items = 0
  t.redundancy = 'jsd'  # R: 'jsd' (1 - JSD/ln 2) or 'pmi' (max(PMI,0)); for a single run's defaults
  # Keep R's diagonal (a task is redundant with itself: R_ii = 1 for JSD, the self-PMI for PMI).
  # False is the pairwise-only energy (sum over i != j), reported as the 'pairwise-only' ablation.
  t.self_redundancy = True
  t.lam = 1.0  # weight of the redundancy (selection varies it: select.lam)
  t.tau = 0.1  # entropy weight (tau > 0 spreads the mixture)
  # Selection on the validation parts: every combination is a candidate mixture, fine-tuned on the
  # same budget; the best mean validation choice accuracy is reported as `taskpgm`.
  t.select = ml_collections.ConfigDict()
  # Unary kinds tried. val_loss is left out: on the development seeds it rewarded noise/qa (any
  # prompt-answer task teaches the answer format), whose mixtures lost on validation and test.
  t.select.unary = 'val_choice'
  t.select.redundancy = 'jsd,pmi'  # redundancy kinds tried
  t.select.lam = '0.5,2.0'  # lam values tried
  t.select.tau = '0.1,0.3'  # tau values tried (0.1 alone gave peaked mixtures on the dev seeds)
  t.budget = 6  # tasks the discrete greedy variant may pick (its lam is lam / budget)
  t.temperature = 2.0  # the temperature-sampling baseline's T
  t.finetune_steps = 100  # the same fine-tuning budget for every mixture
  t.num_options = 4  # options per multiple-choice item (answer + distractors from the suite)
  t.em_items = 16  # test items per suite also scored by exact match (greedy decoding; 0: none)
  # Pool sizes: task i keeps num_train / size_spread**x_i training items, x_i in [0, 1] fixed by its
  # name (1: every task the same size).
  t.size_spread = 20.0

  config.batch_size = 8  # fine-tuning batch, in sequences
  config.data.loss_on_prompt = False  # supervised fine-tuning: only answers carry loss
  config.data.num_train = 2000  # generated training items per task (before size_spread)
  config.data.num_heldout = 300  # held-out items per task (evaluation items come from these)
  config.eval_items = 300  # evaluation items per task (split into validation and test: 150 each)
  config.domains = t.get_ref('tasks')
  config.optimizer.learning_rate = 1e-3  # fine-tuning learning rate
  config.optimizer.warmup_steps = 10  # fine-tuning warmup
  if variant == 'n100':  # the N = 100 pool, one seed and family: potentials, solve, greedy at size
    t.tasks = pool_100()
    t.seeds, t.families = '0', 'quickstart'
    t.unary_items = 32  # as in its reported run
  elif variant == 'mislabeled':  # 40 tasks: the pool + 6 mislabeled copies (README: TaskPGM)
    t.tasks = POOL + ''.join(f',mislabeled/bbh/{task}' for task in MISLABELED)
    t.seeds = '20,21,22,23,24'
  elif variant == 'skewed':  # 40 tasks: the pool + 6 copies answered with one label each
    t.tasks = POOL + ''.join(f',skewed/bbh/{task}' for task in MISLABELED)
    # Seed 30: development (the one seed looked at before this run); 40-44: reported.
    t.seeds = '40,41,42,43,44'
    t.unary_items = 32  # 32 validation items per suite: a third of the potentials' time
  elif variant == 'learnable':  # the same 34-task pool, evaluated on the 6 suites it can move
    t.eval_tasks = LEARNABLE_SUITES
    t.seeds = '50,51,52,53,54'  # fixed before any run of this variant
  elif variant in ('short', 'precise', 'precise10'):  # the learnable suites, a budget that binds
    t.eval_tasks = LEARNABLE_SUITES
    # 30 steps x 8 sequences: about 7 per task under uniform. Development seed 31 (read at 100 and
    # 30 steps before `:short`'s run); 60-64 reported, fixed before any run of this variant.
    t.finetune_steps = 30
    t.seeds = '60,61,62,63,64'
    if variant in ('precise', 'precise10'):  # read on 4x the evaluation items: 600 test per suite
      config.data.num_heldout = config.eval_items = 1200  # 600 validation + 600 test per suite
      t.unary_items = 150  # the potentials read what `:short`'s did: 150 validation items/suite
      # No development run: only the item counts differ from `:short`. 70-74 fixed before any run.
      t.seeds = '70,71,72,73,74'
    if variant == 'precise10':  # 10 seeds: a ±0.009 paired CI at `:precise`'s per-seed spread
      t.seeds = ','.join(str(s) for s in range(80, 90))  # fixed before any run of this variant
  elif variant:
    raise ValueError(f'configs/taskpgm.py: unknown variant {variant!r} '
                     f'(known: {", ".join(VARIANTS)})')
  return config
