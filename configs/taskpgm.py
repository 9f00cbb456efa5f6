"""TaskPGM: a task mixture for supervised fine-tuning from an energy-based model over tasks.

The pool: BBH-format tasks, near-duplicates of some in another phrasing, an unrelated task (math) and a
noise task. The evaluation suite: the BBH tasks (plus any `eval_files`), each split by a seeded split
into a validation part (the only part any mixture may look at) and a test part (the only one reported).
"""

import ml_collections

from configs import base

BBH = ('bbh/boolean_expressions,bbh/dyck_languages,bbh/multistep_arithmetic_two,bbh/navigate,'
       'bbh/object_counting,bbh/tracking_shuffled_objects,bbh/web_of_lies,bbh/word_sorting')


def get_config():
  config = base.get_config()
  config.taskpgm = ml_collections.ConfigDict()
  config.taskpgm.tasks = (BBH + ',rephrase/bbh/navigate,rephrase/bbh/web_of_lies,'
                          'rephrase/bbh/boolean_expressions,math/easy,noise/qa')  # the task pool
  config.taskpgm.eval_tasks = BBH  # pool tasks whose evaluation items form the evaluation suite
  config.taskpgm.eval_files = ''  # extra suites: comma-separated JSONL / BBH-JSON files
  config.taskpgm.val_fraction = 0.5  # share of each suite's items in its validation part
  config.taskpgm.sources = 'code/python,prose/plays'  # what the base model is pre-trained on
  config.taskpgm.base_steps = 300  # base model pre-training steps
  config.taskpgm.base_learning_rate = 3e-3  # base model peak learning rate
  config.taskpgm.base_root = '/tmp/mixlab_base'  # base models are cached here, by their config
  config.taskpgm.single_task_steps = 60  # steps of each single-task fine-tune (one population)
  config.taskpgm.probes = 64  # P probe inputs, drawn from the validation parts
  # u_i, each task's utility measured on the validation parts only, scaled to max |u| = 1:
  # 'val_acc' (single-task model's exact-match gain over the base, averaged over the suites),
  # 'val_loss' (its answer-token NLL gain, same averaging), 'size' (log10 of its training tokens).
  config.taskpgm.unary = 'val_acc'
  config.taskpgm.redundancy = 'jsd'  # R for mixture.json: 'jsd' (1 - JSD/ln 2) or 'pmi' (max(PMI,0))
  # Keep R's diagonal (a task is redundant with itself: R_ii = 1 for JSD, the self-PMI for PMI).
  # False is the pairwise-only energy (sum over i != j), which concentrates on one task when every
  # pair shares some behaviour (see mixing/taskpgm/energy.py).
  config.taskpgm.self_redundancy = True
  config.taskpgm.lam = 1.0  # weight of the redundancy
  config.taskpgm.tau = 0.1  # entropy weight (tau > 0 spreads the mixture)
  config.taskpgm.budget = 6  # tasks the discrete greedy variant may pick (its lam is lam / budget)
  config.taskpgm.temperature = 2.0  # the temperature-sampling baseline's T
  config.taskpgm.finetune_steps = 150  # the same fine-tuning budget for every mixture

  config.data.loss_on_prompt = False  # supervised fine-tuning: only answers carry loss
  config.data.num_train = 2000  # generated training items per task
  config.data.num_heldout = 120  # held-out items per task (evaluation items come from these)
  config.eval_items = 64  # evaluation items per task (split into validation and test)
  config.domains = config.taskpgm.get_ref('tasks')
  config.optimizer.learning_rate = 1e-3  # fine-tuning learning rate
  config.optimizer.warmup_steps = 10  # fine-tuning warmup
  return config
