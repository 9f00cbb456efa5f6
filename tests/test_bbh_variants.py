"""rephrase/bbh/<task> and variant<k>/bbh/<task>: every BBH task's items, phrased otherwise; the old
tasks' and rephrasings' outputs pinned."""

import hashlib
import json

import pytest

from mixing.data import domains as domains_lib
from mixing.data.builtin import bbh_tasks, bbh_variants

SMALL = domains_lib.BuiltinOptions(num_train=20, num_heldout=10, num_eval=5)

# sha256 prefixes of the first 40 items / 20 documents, computed with the code before bbh_more.
_GOLDEN = {
    'boolean_expressions': '6aab4341f265153d',
    'dyck_languages': '11cb9e05bbb77fee',
    'multistep_arithmetic_two': '78b82d9019fde8ba',
    'navigate': '98ea077bff7aff76',
    'object_counting': '802de20813508d4b',
    'tracking_shuffled_objects': '06b6db59b6e90ac8',
    'web_of_lies': '454a114407adefee',
    'word_sorting': '09280faf1ef3389f',
    'rephrase/bbh/boolean_expressions': '6ef5a6d179c0fb91',
    'rephrase/bbh/navigate': '502be3664b1f78fd',
    'rephrase/bbh/web_of_lies': '434727fafdf8e755',
    'rephrase/bbh/word_sorting': '1d540c915a4028e0',
    'rephrase/bbh/object_counting': '2d32a43bfcceb80b',
}


def _digest(obj):
  return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def test_old_tasks_and_rephrasings_are_unchanged():
  got = {t: _digest(bbh_tasks.generate(t, 0, 40)) for t in bbh_tasks.TASKS[:8]}
  for t in ('boolean_expressions', 'navigate', 'web_of_lies', 'word_sorting', 'object_counting'):
    domain = domains_lib.builtin_domain(f'rephrase/bbh/{t}', seed=0, opts=SMALL)
    got[f'rephrase/bbh/{t}'] = _digest([[d.prompt, d.completion] for d in domain.train])
  assert got == _GOLDEN


def test_pool_of_a_hundred_is_nameable():
  names = domains_lib.builtin_names()
  pool = ([f'bbh/{t}' for t in bbh_tasks.TASKS] + bbh_variants.names() +
          ['math/easy', 'math/medium', 'math/hard', 'noise/qa'])
  assert len(pool) >= 100 and len(set(pool)) == len(pool) and set(pool) <= set(names)
  for name in pool:
    domains_lib.check_builtin_name(name)
  for bad in ('variant5/bbh/navigate', 'variant0/bbh/navigate', 'rephrase/bbh/nope'):
    with pytest.raises(ValueError, match='unknown domain'):
      domains_lib.check_builtin_name(bad)


@pytest.mark.parametrize('task', bbh_tasks.TASKS)
def test_rephrase_and_variants_share_targets_not_phrasing(task):
  base = domains_lib.builtin_domain(f'bbh/{task}', seed=0, opts=SMALL)
  prompts = {d.prompt for d in base.train + base.heldout}
  for name in [n for n in bbh_variants.names() if n.endswith(f'/bbh/{task}')]:
    domain = domains_lib.builtin_domain(name, seed=0, opts=SMALL)
    assert len(domain.train) == 20 and len(domain.heldout) == 10 and len(domain.items) == 5
    assert [d.completion for d in domain.train] == [d.completion for d in base.train]
    assert [i.target for i in domain.items] == [i.target for i in base.items]
    assert not prompts & {d.prompt for d in domain.train + domain.heldout}, name
    assert all(domain.is_correct(' ' + i.target, i.target) for i in domain.items)


@pytest.mark.parametrize('task', bbh_tasks.TASKS)
def test_every_rewording_applies(task):
  inputs = [x['input'] for x in bbh_tasks.generate(task, 0, 60)]
  for old, _ in bbh_variants.REPHRASINGS.get(task, ()):
    assert any(old in text for text in inputs), (task, old)
