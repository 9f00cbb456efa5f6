"""The BBH tasks of bbh_more and bbh_reasoning: each target re-derived from its input alone."""

import datetime
import itertools
import math
import re

import pytest

from mixing.data.builtin import bbh_more, bbh_reasoning, bbh_tasks

NEW = tuple(sorted({**bbh_more.GENERATORS, **bbh_reasoning.GENERATORS}))


def _options(text):
  return dict(re.findall(r'^\(([A-Z])\) (.*)$', text, re.M))


def _answer_letter(text, answer):
  """The one option letter whose text is `answer`."""
  found = [k for k, v in _options(text).items() if v == answer]
  assert len(found) == 1, (answer, text)
  return f'({found[0]})'


# ----------------------------------------------------------------------------- checkers
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')
_FACTS = ((r'Today is Christmas Eve of (\d+)\.', None), (r'This is the last day of (\d+)\.', None),
          (r'Today is (.+)\.', 0), (r'It is (.+) today\.', 0), (r'Yesterday was (.+)\.', 1),
          (r'Tomorrow is (.+)\.', -1), (r'The day before yesterday was (.+)\.', 2),
          (r'Jane booked a flight for tomorrow, (.+)\.', -1),
          (r'The deadline is (.+), which is (\d+) days away from now\.', -1),
          (r'Jane quited her job on (.+)\. (\d+) days have passed since then\.', 1))


def _parse_date(text):
  found = re.fullmatch(r'(\w{3}) (\d+), (\d+)', text)
  if found:
    return datetime.date(int(found[3]), _MONTHS.index(found[1]) + 1, int(found[2]))
  month, day, year = map(int, text.split('/'))
  return datetime.date(year, month, day)


def check_date_understanding(text):
  fact, question = re.match(r'(.+) What is the date (.+) in MM/DD/YYYY\?\n', text).groups()
  for pattern, sign in _FACTS:
    found = re.fullmatch(pattern, fact)
    if found and sign is None:
      today = datetime.date(int(found[1]), 12, 24 if 'Christmas' in pattern else 31)
      break
    if found:
      days = sign * (int(found[2]) if found.lastindex == 2 else 1) if sign else 0
      today = _parse_date(found[1]) + datetime.timedelta(days=days)
      break
  if question == 'one year ago from today':
    answer = today.replace(year=today.year - 1)
  elif question == 'a month ago':
    answer = datetime.date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, today.day)
  else:
    days = {'today': 0, 'tomorrow': 1, 'yesterday': -1, '24 hours later': 1,
            'one week ago from today': -7, 'one week from today': 7, '10 days ago': -10}[question]
    answer = today + datetime.timedelta(days=days)
  return _answer_letter(text, answer.strftime('%m/%d/%Y'))


def check_geometric_shapes(text):
  path = re.search(r'd="([^"]+)"', text)[1]
  if ' A ' in path:
    rx, ry = map(float, re.search(r'A ([\d.]+),([\d.]+)', path).groups())
    return _answer_letter(text, 'sector' if ' L ' in path else 'circle' if rx == ry else 'ellipse')
  vertices = []
  for point in re.findall(r'[ML] ([\d.]+,[\d.]+)', path):
    if not vertices or vertices[-1] != point:
      vertices.append(point)
  if len(vertices) > 2:
    assert vertices.pop() == vertices[0]  # closed
  v = [tuple(map(float, p.split(','))) for p in vertices]
  n = len(v)
  names = {2: 'line', 3: 'triangle', 5: 'pentagon', 6: 'hexagon', 7: 'heptagon', 8: 'octagon'}
  if n != 4:
    return _answer_letter(text, names[n])
  sides = [math.dist(v[j], v[(j + 1) % 4]) for j in range(4)]
  cosines = [((v[j][0] - v[j - 1][0]) * (v[(j + 1) % 4][0] - v[j][0]) +
              (v[j][1] - v[j - 1][1]) * (v[(j + 1) % 4][1] - v[j][1])) / sides[j - 1] / sides[j]
             for j in range(4)]
  if all(abs(c) < 0.01 for c in cosines):
    return _answer_letter(text, 'rectangle')
  close = lambda a, b: abs(sides[a] - sides[b]) < 0.02
  assert (close(0, 1) and close(2, 3)) or (close(1, 2) and close(3, 0)), text
  return _answer_letter(text, 'kite')


_ORDER = {w: k for k, words in enumerate(bbh_more.ADJECTIVES) for w in words}


def check_hyperbaton(text):
  ranks = {k: [_ORDER[w] for w in phrase.split()[:-1]] for k, phrase in _options(text).items()}
  good = [k for k, r in ranks.items() if r == sorted(r)]
  assert len(good) == 1, text
  return f'({good[0]})'


def check_penguins_in_a_table(text):
  table = [(n, int(a), int(h), int(w)) for n, a, h, w in re.findall(
      r'(\w+), (\d+), (\d+), (\d+)', re.search(r'\(kg\) (.+?)  For', text)[1])]
  example = re.search(r'age of (\w+) is (\d+), the weight of (\w+) is (\d+) kg, the height of '
                      r'(\w+) is (\d+) cm', text).groups()
  rows = {r[0]: r for r in table}
  assert (rows[example[0]][1], rows[example[2]][3], rows[example[4]][2]) == tuple(
      int(x) for x in example[1::2])
  added = re.search(r'table:\n(\w+), (\d+), (\d+), (\d+)\n', text)
  if added:
    table.append((added[1],) + tuple(int(x) for x in added.groups()[1:]))
  gone = re.search(r'named (\w+) from', text)
  table = [r for r in table if not gone or r[0] != gone[1]]
  q = text.split('\nOptions:')[0].split('  ')[-1].split('\n')[-1]
  ages, num = [r[1] for r in table], lambda pattern: int(re.search(pattern, q)[1])
  answers = {
      'more than': lambda: str(sum(a > num(r'than (\d+)') for a in ages)),
      'less than': lambda: str(sum(a < num(r'than (\d+)') for a in ages)),
      'there in the table': lambda: str(len(table)),
      'the oldest': lambda: max(table, key=lambda r: r[1])[0],
      'the youngest': lambda: min(table, key=lambda r: r[1])[0],
      'taller than': lambda: max(table, key=lambda r: r[2])[0],
      'cm tall': lambda: [r[0] for r in table if r[2] == num(r'(\d+) cm')][0],
      'the age of': lambda: str(dict((r[0], r[1]) for r in table)[re.search(r'of (\w+)\?', q)[1]]),
      'the last penguin sorted': lambda: max(r[0] for r in table),
      'the first penguin sorted': lambda: min(r[0] for r in table),
  }
  [key] = [k for k in answers if k in q]
  return _answer_letter(text, answers[key]())


def _hour(text):
  return int(text[:-2]) % 12 + (12 if text.endswith('pm') else 0)


def check_temporal_sequences(text):
  wake = _hour(re.search(r'woke up at (\w+)\.', text)[1])
  close = _hour(re.search(r'closed after (\w+)\.', text)[1])
  busy = sorted((_hour(a), _hour(b)) for a, b in re.findall(r' from (\w+) to (\w+)\.\n', text))
  free = [(a, b) for a, b in zip([wake] + [e for _, e in busy], [s for s, _ in busy] + [close])
          if a < b]
  assert len(free) == 1, text
  name = lambda h: f"{(h - 1) % 12 + 1}{'am' if h < 12 else 'pm'}"
  return _answer_letter(text, f'{name(free[0][0])} to {name(free[0][1])}')


def check_sports_understanding(text):
  sentence = re.fullmatch(r'Is the following sentence plausible\? "(.+)\."', text)[1]
  sport_of = {}
  for sport, (athletes, actions, final) in bbh_more.SPORTS.items():
    for phrase in athletes + actions + (final,):
      assert phrase not in sport_of, phrase  # every name and action belongs to one sport
      sport_of[phrase] = sport
  sports = {s for phrase, s in sport_of.items() if f' {phrase} ' in f' {sentence} '}
  return 'yes' if len(sports) == 1 else 'no'


_LEADS = ('First premise: ', 'Second premise: ', 'First, ', 'Second, ', 'To begin with, ',
          'Moreover, ', 'First of all, ', 'Next, ', 'To start with, ', 'Now, ', 'Therefore, ',
          'Hence, ', 'So, necessarily, ', 'It follows that ', 'We may conclude that ',
          'In consequence, ', 'All this entails that ', 'We may conclude: ', 'From this follows: ')
_L = r'(not )?an? (.+?)'
_CLAUSES = (  # (pattern, kind, literal groups (negation group, predicate group); 'rev' flips all)
    (rf'it is not the case that (\w+) is an? (.+)', 'not', ()),
    (rf'somebody is {_L} and {_L}', 'some', ((1, 2), (3, 4))),
    (rf'some (.+?) is {_L}', 'some', ((None, 1), (2, 3))),
    (r'not every (.+?) is an? (.+)', 'some', ((None, 1), ('not', 2))),
    (rf'everyone who is {_L} is {_L}, too', 'all', ((1, 2), (3, 4))),
    (rf'whoever is {_L} is {_L}(?: or {_L})?', 'all', ((1, 2), (3, 4), (5, 6))),
    (rf'every (.+?) is {_L}(?: or {_L})?', 'all', ((None, 1), (2, 3), (4, 5))),
    (r'no (.+?) is an? (.+)', 'all', ((None, 1), ('not', 2))),
    (rf'(not )?being an? (.+?) is sufficient for (not )?being an? (.+)', 'all', ((1, 2), (3, 4))),
    (rf'(not )?being an? (.+?) is necessary for (not )?being an? (.+)', 'all', ((3, 4), (1, 2))),
    (rf'(\w+) is {_L}', 'ind', ((2, 3),)),
)


def _clause(sentence, preds):
  """(kind, literals) of a sentence; literals are (predicate index, positive)."""
  for pattern, kind, groups in _CLAUSES:
    found = re.fullmatch(pattern, sentence, re.I)
    if not found:
      continue
    if kind == 'not':
      return 'ind', [(preds.setdefault(found[2], len(preds)), False)]
    sign = lambda neg: neg is None or (neg != 'not' and not found[neg])
    return kind, [(preds.setdefault(found[p], len(preds)), sign(neg))
                  for neg, p in groups if found[p]]
  raise AssertionError(sentence)


def _true(kind, lits, world, me):
  holds = lambda lit, t: t[lit[0]] == lit[1]
  if kind == 'ind':
    return holds(lits[0], me)
  if kind == 'some':
    return any(holds(lits[0], t) and holds(lits[1], t) for t in world)
  return all(not holds(lits[0], t) or any(holds(l, t) for l in lits[1:]) for t in world)


def check_formal_fallacies(text):
  argument = re.match(r'"(?:.*?(?:argument|question): )(.+)"\n', text)[1]
  preds, clauses = {}, []
  for sentence in argument[:-1].split('. '):
    lead = [l for l in _LEADS if sentence.lower().startswith(l.lower())]
    clauses.append(_clause(sentence[len(lead[0]) if lead else 0:], preds))
  types = list(itertools.product((False, True), repeat=len(preds)))
  worlds = [w for k in range(1, len(types) + 1) for w in itertools.combinations(types, k)]
  valid = all(_true(*clauses[-1], w, me) for w in worlds for me in w
              if all(_true(*c, w, me) for c in clauses[:-1]))
  return 'valid' if valid else 'invalid'


_RANKS = {'the leftmost': 0, 'the second from the left': 1, 'the rightmost': 2, 'first': 0,
          'second': 1, 'last': 2, 'the oldest': 0, 'the second-newest': 1, 'the newest': 2,
          'the cheapest': 0, 'the second-most expensive': 1, 'the most expensive': 2}
_BEFORE = {'to the left of': True, 'to the right of': False, 'above': True, 'below': False,
           'older than': True, 'newer than': False, 'less expensive than': True,
           'more expensive than': False}


def check_logical_deduction_three_objects(text):
  body, choices = text.split('\nOptions:\n')
  listed, said = re.search(r'three \w+: (.+?)\. (.+)$', body).groups()
  objects = [re.sub(r'^(an?|and an?|and) ', '', o) for o in listed.split(', ')]
  strip = lambda s: re.sub(r'^the ', '', s, flags=re.I)

  def parse(sentence):  # ('rank', object, rank) or ('before', object, object, is_before)
    found = re.fullmatch(r'(.+?) (?:is|are|finished) (.+)', sentence)
    subject, rest = strip(found[1]), found[2]
    if rest in _RANKS:
      return lambda order: order[objects.index(subject)] == _RANKS[rest]
    [(phrase, before)] = [(p, b) for p, b in _BEFORE.items() if rest.startswith(p + ' ')]
    other = objects.index(strip(rest[len(phrase) + 1:]))
    return lambda order: (order[objects.index(subject)] < order[other]) == before

  facts = [parse(s) for s in said.rstrip('.').split('. ')]
  orders = [o for o in itertools.permutations(range(3)) if all(f(o) for f in facts)]
  assert len(orders) == 1, text
  right = [line[:3] for line in choices.split('\n') if parse(line[4:])(orders[0])]
  assert len(right) == 1, text
  return right[0]


def _stem(kind):
  return ' '.join(w[:-2] if w.endswith('shes') else w[:-1] if w.endswith('s') else w
                  for w in kind.split())


def check_reasoning_about_colored_objects(text):
  colors = bbh_reasoning.COLORS
  line = text.split('\n')[0]
  listed, q = re.fullmatch(r'On the \w+, (.+?)\. ((?:What|Is|How|If) .+)', line).groups()
  listed = re.sub(r'^(there is|there are|I see|you see)( (a set of|a bunch of|several|the '
                  r'following) \w+ arranged in a row:)? ', '', listed)
  items = [item.split(' ', 2) for item in re.split(r', and |, | and ', listed)]
  color = [c for _, c, _ in items]
  thing = [t for _, _, t in items]
  index = lambda ref: color.index(ref.split()[0]) if ref.split()[0] in colors else thing.index(ref)
  if found := re.fullmatch(r'What color is the (.+)\?', q):
    return _answer_letter(text, color[thing.index(found[1])])
  if found := re.fullmatch(r'Is the (.+) (\w+)\?', q):
    return _answer_letter(text, 'yes' if color[thing.index(found[1])] == found[2] else 'no')
  counts = bbh_reasoning.COUNTS
  if found := re.fullmatch(r'How many \w+s are neither (\w+) nor (\w+)\?', q):
    return _answer_letter(text, counts[sum(c not in found.groups() for c in color)])
  if found := re.fullmatch(r'What is the color of the \w+ directly to the (\w+) of the (.+)\?', q):
    return _answer_letter(text, color[index(found[2]) + (1 if found[1] == 'right' else -1)])
  if found := re.fullmatch(r'What is the color of the (\w+)-most \w+\?', q):
    return _answer_letter(text, color[0 if found[1] == 'left' else -1])
  if found := re.fullmatch(r'What is the color of the \w+ furthest from the (.+)\?', q):
    j = index(found[1])
    return _answer_letter(text, color[0 if j > len(color) - 1 - j else -1])
  if found := re.fullmatch(r'How many non-(\w+) \w+s do you see to the (\w+) of the (.+)\?', q):
    j = index(found[3])
    span = color[:j] if found[2] == 'left' else color[j + 1:]
    return _answer_letter(text, counts[sum(c != found[1] for c in span)])
  removed, asked = re.fullmatch(r'If I remove all the (.+) from the \w+, how many (.+) remain on '
                                r'it\?', q).groups()
  is_it = lambda what, c, t: what.split()[0] == c if what.split()[0] in colors else (
      _stem(what) == _stem(t))
  left = sum(counts.index(n) for n, c, t in items
             if not is_it(removed, c, t) and is_it(asked, c, t))
  return _answer_letter(text, counts[left])


CHECKERS = {name[len('check_'):]: f for name, f in globals().items() if name.startswith('check_')}


# ----------------------------------------------------------------------------- generators


def test_every_new_task_is_registered_and_checked():
  assert len(NEW) >= 8 and set(NEW) <= set(bbh_tasks.TASKS) and set(CHECKERS) == set(NEW)
  assert bbh_tasks.TASKS[:8] == ('boolean_expressions', 'dyck_languages',
                                 'multistep_arithmetic_two', 'navigate', 'object_counting',
                                 'tracking_shuffled_objects', 'web_of_lies', 'word_sorting')


@pytest.mark.parametrize('task', NEW)
def test_new_tasks_are_deterministic_and_prefix_stable(task):
  items = bbh_tasks.generate(task, 4, 30)
  assert items == bbh_tasks.generate(task, 4, 30) and items[:7] == bbh_tasks.generate(task, 4, 7)
  assert items != bbh_tasks.generate(task, 5, 30)
  assert all(set(x) == {'input', 'target'} and x['input'] and x['target'] for x in items)
  assert len({x['input'] for x in items}) >= 27


@pytest.mark.parametrize('task', NEW)
def test_new_task_targets_are_rederived_from_the_input(task):
  for item in bbh_tasks.generate(task, 11, 200):
    assert CHECKERS[task](item['input']) == item['target'], item['input']


@pytest.mark.parametrize('task', bbh_tasks.TASKS)
def test_option_letters_are_listed(task):
  for item in bbh_tasks.generate(task, 1, 100):
    if re.fullmatch(r'\([A-Z]\)', item['target']):
      assert f"\n{item['target']} " in item['input']


@pytest.mark.parametrize('task,values', [('hyperbaton', ('(A)', '(B)')),
                                         ('sports_understanding', ('yes', 'no')),
                                         ('formal_fallacies', ('valid', 'invalid'))])
def test_binary_targets_are_balanced(task, values):
  targets = [x['target'] for x in bbh_tasks.generate(task, 2, 200)]
  assert set(targets) == set(values) and 0.35 <= targets.count(values[0]) / 200 <= 0.65


# Real BBH examples (bbh/<task>.json), to validate the checkers.
_REAL = [
    ('hyperbaton', 'Which sentence has the correct adjective order:\nOptions:\n(A) midsize old '
     'grey Brazilian sweater\n(B) midsize grey Brazilian old sweater', '(A)'),
    ('hyperbaton', 'Which sentence has the correct adjective order:\nOptions:\n(A) rubber gray '
     'walking Mexican midsize cat\n(B) midsize gray Mexican rubber walking cat', '(B)'),
    ('date_understanding', 'Tomorrow is 11/12/2019. What is the date yesterday in MM/DD/YYYY?\n'
     'Options:\n(A) 11/10/2076\n(B) 11/10/2019\n(C) 09/10/2019\n(D) 11/06/2019\n(E) 11/11/2019\n'
     '(F) 11/17/2019', '(B)'),
    ('date_understanding', 'Today is Christmas Eve of 1937. What is the date tomorrow in '
     'MM/DD/YYYY?\nOptions:\n(A) 12/11/1937\n(B) 12/25/1937\n(C) 01/04/1938\n(D) 12/04/1937\n'
     '(E) 12/25/2006\n(F) 07/25/1937', '(B)'),
    ('sports_understanding', 'Is the following sentence plausible? "Tom Brady converted the first '
     'down."', 'yes'),
    ('formal_fallacies', '"Here comes a perfectly valid argument: First premise: Everyone who is a '
     'devotee of Legia Warszawa is a follower of FK Kukesi, too. Second premise: No follower of FK '
     'Kukesi is a friend of Olympique de Marseille. Therefore, whoever is a devotee of Legia '
     'Warszawa is not a friend of Olympique de Marseille."\n', 'valid'),
    ('formal_fallacies', '"Here comes a perfectly valid argument: First of all, whoever is a '
     'schoolmate of Sondra is not a stepsister of Pricilla. In consequence, whoever is not a '
     'stepsister of Pricilla is a schoolmate of Sondra."\n', 'invalid'),
    ('formal_fallacies', '"Some football fans admire various clubs, others love only a single '
     'team. But who is a fan of whom precisely? The following argument pertains to this question: '
     'To begin with, Jose is an admirer of AEK Athens FC. Moreover, every admirer of AEK Athens FC '
     'is an expert of Feyenoord. All this entails that Jose is an expert of Feyenoord."\n',
     'valid'),
    ('formal_fallacies', '"Here comes a perfectly valid argument: To start with, whoever is an '
     'expert of BSC Young Boys is not an ex-fan of Real Betis. Now, whoever is a friend of FC '
     'Dynamo Kyiv is not an expert of BSC Young Boys. Hence, no friend of FC Dynamo Kyiv is an '
     'ex-fan of Real Betis."\n', 'invalid'),
    ('logical_deduction_three_objects', 'The following paragraphs each describe a set of three '
     'objects arranged in a fixed order. The statements are logically consistent within each '
     'paragraph. On a branch, there are three birds: a blue jay, a quail, and a falcon. The falcon '
     'is to the right of the blue jay. The blue jay is to the right of the quail.\nOptions:\n(A) '
     'The blue jay is the second from the left\n(B) The quail is the second from the left\n(C) The '
     'falcon is the second from the left', '(A)'),
    ('reasoning_about_colored_objects', 'On the desk, you see a set of things arranged in a row: a '
     'grey cup, a purple mug, and a blue teddy bear. What is the color of the thing directly to '
     'the right of the cup?\nOptions:\n' + '\n'.join(
         f'({chr(65 + j)}) {c}' for j, c in enumerate(bbh_reasoning.COLORS)), '(Q)'),
    ('temporal_sequences', 'Today, Emily went to the soccer field. Between what times could they '
     'have gone?\nWe know that:\nEmily woke up at 10am.\nLinda saw Emily waiting at the train '
     'station from 10am to 12pm.\nAshley saw Emily fixing their computer at the electronic store '
     'from 12pm to 1pm.\nJohn saw Emily walking towards the Statue of Liberty from 1pm to 2pm.'
     '\nThe soccer field was closed after 8pm.\nBetween what times could Emily have gone to the '
     'soccer field?\nOptions:\n(A) 12pm to 1pm\n(B) 10am to 12pm\n(C) 2pm to 8pm\n(D) 1pm to 2pm',
     '(C)'),
]


@pytest.mark.parametrize('task,text,target', _REAL)
def test_checkers_agree_with_real_bbh(task, text, target):
  assert CHECKERS[task](text) == target


def test_validity_checker_on_textbook_forms():
  p, q = (0, True), (1, True)
  not_q = (1, False)
  assert bbh_reasoning.is_valid([('ind', p, None), ('all', p, (q,))], ('ind', q, None))
  assert not bbh_reasoning.is_valid([('ind', q, None), ('all', p, (q,))], ('ind', p, None))
  assert bbh_reasoning.is_valid([('ind', not_q, None), ('all', p, (q,))], ('ind', (0, False), None))
  assert not bbh_reasoning.is_valid([('all', p, (q,))], ('all', q, (p,)))
  assert bbh_reasoning.is_valid([('some', p, q), ('all', q, ((2, True),))], ('some', p, (2, True)))
