"""The mixture sampler: proportions, weight changes, exact resume, process slices, bad weights."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mixing.data import sampler as sampler_lib
from mixing.data.packing import PackedRows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources(num_domains=3, rows=50, seq_len=8):
  """Domain d's row i holds d * 1000 + i in every token, so a row names its domain and index."""
  out = []
  for d in range(num_domains):
    ids = (d * 1000 + np.arange(rows))[:, None] * np.ones((1, seq_len + 1), np.int64)
    out.append(PackedRows(ids.astype(np.int32), np.ones_like(ids, np.uint8)))
  return out


def _make(weights=(0.2, 0.3, 0.5), batch=64, seed=0, **kwargs):
  sources = _sources(len(weights))
  names = [f'd{i}' for i in range(len(weights))]
  return sampler_lib.MixtureSampler(sources, names, weights, batch, seed=seed, **kwargs)


def test_proportions_within_four_sigma_over_20000_examples():
  weights = np.array([0.1, 0.2, 0.7])
  s = _make(weights, batch=100)
  domain_N = np.concatenate([s.next_batch()['domain_B'] for _ in range(200)])
  assert domain_N.size == 20_000
  counts = np.bincount(domain_N, minlength=3)
  sigma = np.sqrt(20_000 * weights * (1 - weights))
  assert np.all(np.abs(counts - 20_000 * weights) < 4 * sigma), counts
  np.testing.assert_array_equal(s.realized()['counts_D'], counts)
  np.testing.assert_allclose(s.realized()['expected_D'], 20_000 * weights)


def test_rows_carry_their_domain_and_each_epoch_is_a_permutation():
  s = _make((1.0, 1.0, 1.0), batch=30)
  seen = {d: [] for d in range(3)}
  for _ in range(20):
    batch = s.next_batch()
    np.testing.assert_array_equal(batch['inputs_BxL'][:, 0] // 1000, batch['domain_B'])
    for d, v in zip(batch['domain_B'], batch['inputs_BxL'][:, 0] % 1000):
      seen[d].append(v)
  for d in range(3):
    first_epoch = seen[d][:50]
    assert sorted(first_epoch) == list(range(50)), d  # no repeats before the epoch ends
    assert first_epoch != list(range(50))  # and shuffled


def test_weight_change_takes_effect_at_the_next_batch():
  s = _make((1.0, 0.0, 0.0), batch=64)
  for _ in range(5):
    assert set(s.next_batch()['domain_B']) == {0}
  s.set_weights({'d2': 1.0})
  for _ in range(5):
    assert set(s.next_batch()['domain_B']) == {2}
  s.set_weights([0.0, 1.0, 0.0])
  assert set(s.next_batch()['domain_B']) == {1}
  np.testing.assert_array_equal(s.history_steps_H, [0, 5, 10])
  np.testing.assert_allclose(s.realized()['expected_D'], [320, 64, 320])


def test_same_seed_and_history_same_batches_different_seed_differs():
  def run(seed):
    s = _make(seed=seed)
    out = [s.next_batch()['inputs_BxL'] for _ in range(3)]
    s.set_weights([0.5, 0.5, 0.0])
    return np.stack(out + [s.next_batch()['inputs_BxL'] for _ in range(3)])
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.array_equal(run(0), run(1))


@pytest.mark.parametrize('draws, bound', [('quasi', 4), ('iid', None)])
def test_quasi_draws_track_the_weight_history_within_a_few_examples(draws, bound):
  """At every step of every seed, examples drawn per domain minus what the weight history asked for
  (3 weight vectors over 2,400 examples): quasi-random draws stay within 4; i.i.d. ones do not."""
  worst = 0.0
  for seed in range(10):
    s = _make((0.1, 0.2, 0.7), batch=8, seed=seed, draws=draws)
    for step in range(300):
      if step in (100, 200):
        s.set_weights([0.5, 0.25, 0.25] if step == 100 else [0.0, 0.9, 0.1])
      s.next_batch()
      realized = s.realized()
      worst = max(worst, np.abs(realized['counts_D'] - realized['expected_D']).max())
  if bound is None:
    assert worst > 20  # sqrt(2,400 * 0.7 * 0.3) = 22: i.i.d. noise, what quasi draws remove
  else:
    assert worst <= bound


def test_quasi_draws_differ_by_seed_and_never_draw_a_zero_weight_domain():
  a, b = _make(seed=0, draws='quasi'), _make(seed=1, draws='quasi')
  assert not np.array_equal(a.next_batch()['domain_B'], b.next_batch()['domain_B'])
  s = _make((0.0, 0.3, 0.7), batch=64, draws='quasi')
  assert 0 not in np.concatenate([s.next_batch()['domain_B'] for _ in range(50)])


def test_unknown_draws_is_refused_naming_the_field():
  with pytest.raises(ValueError, match=r"^data.draws: 'sobol' is not one of iid, quasi$"):
    _make(draws='sobol')


_CHILD = r'''
import json, sys, numpy as np
sys.path.insert(0, {root!r})
from tests.test_sampler import _make
s = _make(batch=16, draws={draws!r})
s.restore({{k: np.asarray(v) for k, v in json.load(open({state!r})).items()}})
out = np.stack([s.next_batch()['inputs_BxL'] for _ in range(100)])
sys.stdout.buffer.write(out.tobytes())
'''


@pytest.mark.parametrize('draws', sampler_lib.DRAWS)
def test_restore_in_a_fresh_process_gives_identical_next_100_batches(tmp_path, draws):
  s = _make(batch=16, draws=draws)
  for k in range(7):
    if k == 3:
      s.set_weights([0.6, 0.1, 0.3])
    s.next_batch()
  state = {k: np.asarray(v).tolist() for k, v in s.state().items()}
  path = tmp_path / 'state.json'
  path.write_text(json.dumps(state))
  expected = np.stack([s.next_batch()['inputs_BxL'] for _ in range(100)]).astype(np.int32)
  code = _CHILD.format(root=ROOT, state=str(path), draws=draws)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, check=True).stdout
  assert out == expected.tobytes()


def test_each_process_reads_its_own_slice_of_the_global_batch():
  whole = _make(batch=8)
  parts = [_make(batch=8, process_index=i, process_count=2) for i in range(2)]
  for _ in range(5):
    full = whole.next_batch()
    halves = [p.next_batch() for p in parts]
    for key in full:
      np.testing.assert_array_equal(full[key], np.concatenate([h[key] for h in halves]))
  np.testing.assert_array_equal(parts[0].positions_D, whole.positions_D)


@pytest.mark.parametrize('weights,message', [
    ([0.5, -0.1, 0.6], "negative value -0.1 for domain 'd1'"),
    ([0.5, float('nan'), 0.5], "nan for domain 'd1' is not finite"),
    ([0.5, float('inf'), 0.5], "inf for domain 'd1' is not finite"),
    ([0.0, 0.0, 0.0], 'all zero'),
    ([0.5, 0.5], 'expected 3 values (one per domain), got 2'),
    ({'d0': 1.0, 'nope': 1.0}, "unknown domain 'nope'"),
])
def test_bad_weights_raise_naming_the_value(weights, message):
  with pytest.raises(ValueError, match='^weights: .*' + re.escape(message)):
    _make().set_weights(weights)
  with pytest.raises(ValueError, match=re.escape(message)):
    sampler_lib.MixtureSampler(_sources(3), ['d0', 'd1', 'd2'], weights, 4)


def test_empty_domain_is_refused():
  empty = PackedRows(np.zeros((0, 9), np.int32), np.zeros((0, 9), np.uint8))
  with pytest.raises(ValueError, match="domain 'd1': empty"):
    sampler_lib.MixtureSampler([_sources(1)[0], empty], ['d0', 'd1'], [1, 1], 4)
