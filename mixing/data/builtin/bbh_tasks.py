"""Seeded generators for algorithmic tasks in BIG-Bench-Hard's format.

Each item is {'input': str, 'target': str} phrased exactly like the examples of the BBH repo's
`bbh/<task>.json` (`tracking_shuffled_objects` follows `tracking_shuffled_objects_three_objects`).
Targets are computed from the generated structure, never sampled. Yes/No and True/False targets
are balanced by drawing the wanted answer first. This module defines `TASKS`: its own eight
generators and those of `bbh_more` and `bbh_reasoning` (which follow the same contract).

Item `i` is drawn from its own RNG seeded with `f"bbh/{task}:{seed}:{i}"`, so the output is
deterministic and `generate(task, seed, n)[:k] == generate(task, seed, k)`.
"""

import random

from mixing.data.builtin import bbh_more, bbh_reasoning

_WORDS = tuple("""
able about above accept account across action active actor address admit adult advice afraid
after again agency agent agree ahead alarm album alive allow almost alone along already always
amount anchor angle animal answer anxiety apple april area argue army arrive artist aspect
assume attack author autumn avenue average award baby bacon badge balance bamboo banana banner
basket battle beach beauty before begin behind belief bench beyond bicycle biology blanket
border bottle branch bread bridge bright broken bubble budget butter cabin cable camera canal
candle canvas carbon carpet castle cattle ceiling cellar center chain chalk chapter cherry
circle citizen clever climate cloud coffee collar colony copper corner costume cotton
counterpart county cousin cradle crystal culture custom dancer danger debate decade desert
design diamond dinner doctor dragon drawer during eagle earth effort eleven empire energy
engine evening excuse fabric factor family farmer feather fellow fiction finger forest
fortune fossil frozen galaxy garden gather gentle giant ginger glacier global golden gravity
guitar hammer harbor harvest helmet hidden history hollow honey horizon humble hunger island
jacket jungle kernel kettle kingdom kitchen ladder lantern laptop leather lemon letter liquid
lizard lobster magnet marble market meadow melody method middle mirror monkey morning mountain
muscle museum napkin narrow native needle nephew noble number ocean office orange orbit oven
oxygen paddle palace parade parrot pencil pepper pillow pirate planet pocket poem polite
powder puzzle quarter rabbit radar random rapid rhythm ribbon rocket saddle salmon sandal
satellite scarlet season shadow shelter signal silver sketch socket spider spiral squirrel
stable stream sudden summer sunset syndrome tablet temple tender therefrom thunder ticket
timber tomato tunnel turtle umbrella valley velvet vessel village violin voyage walnut
window winter wisdom wizard yellow yogurt zebra
""".split())

_OBJECTS = {
    'fruits': ('an apple|apples', 'a banana|bananas', 'a blackberry|blackberries',
               'a grape|grapes', 'a nectarine|nectarines', 'an orange|oranges', 'a peach|peaches',
               'a plum|plums', 'a raspberry|raspberries', 'a strawberry|strawberries'),
    'vegetables': ('a cabbage|cabbages', 'a carrot|carrots', 'a cauliflower|cauliflowers',
                   'a stalk of celery|stalks of celery', 'a garlic|garlics',
                   'a head of broccoli|heads of broccoli', 'a lettuce head|lettuce heads',
                   'an onion|onions', 'a potato|potatoes', 'a yam|yams'),
    'musical instruments': ('an accordion|accordions', 'a clarinet|clarinets', 'a drum|drums',
                            'a flute|flutes', 'a piano|pianos', 'a trombone|trombones',
                            'a trumpet|trumpets', 'a violin|violins'),
    'animals': ('a bear|bears', 'a cat|cats', 'a chicken|chickens', 'a cow|cows', 'a dog|dogs',
                'a donkey|donkeys', 'a duck|ducks', 'a fish|fish', 'a frog|frogs', 'a goat|goats',
                'a mouse|mice', 'a pig|pigs', 'a rabbit|rabbits', 'a snail|snails',
                'a snake|snakes'),
    'objects': ('a bed|beds', 'a car|cars', 'a chair|chairs', 'a couch|couches',
                'a fridge|fridges', 'a lamp|lamps', 'a microwave|microwaves', 'an oven|ovens',
                'a stove|stoves', 'a table|tables', 'a toaster|toasters'),
}
_NUMBER_WORDS = ('two', 'three', 'four', 'five')

# (intro, item template, transition, swap verb, end sentence, option template, items)
_SHUFFLE_SCENARIOS = (
    ('are playing a game. At the start of the game, they are each holding a ball:',
     '{} has a {} ball', 'As the game progresses, pairs of players trade balls.',
     'swap balls', 'At the end of the game, {} has the', '{} ball',
     ('yellow', 'blue', 'pink', 'brown', 'red', 'white', 'green', 'orange', 'purple', 'black')),
    ('are dancers at a square dance. At the start of a song, they each have a partner:',
     '{} is dancing with {}', 'Throughout the song, the dancers often trade partners.',
     'switch partners', 'At the end of the dance, {} is dancing with', '{}',
     ('Helga', 'Lola', 'Ophelia', 'Izzi', 'Melissa', 'Karl', 'Rodrigo', 'Jamie', 'Patrick',
      'Sam')),
    ('are friends and avid readers who occasionally trade books. At the start of the semester,'
     ' they each buy one new book:', '{} gets {}',
     'As the semester proceeds, they start trading around the new books.', 'swap books',
     'At the end of the semester, {} has', '{}',
     ('Ulysses', 'Frankenstein', 'Lolita', 'Hound of the Baskervilles', 'The Odyssey', 'Catch-22',
      'Moby Dick', 'The Great Gatsby', 'The Fellowship of the Ring', 'The Pearl')),
    ('are holding a white elephant gift exchange. At the start of the event, they are each'
     ' holding a present of a different color:', '{} has a {}',
     'As the event progresses, pairs of people swap gifts.', 'swap their gifts',
     'At the end of the event, {} has the', '{}',
     ('red present', 'black ball', 'white present', 'orange ball', 'purple present', 'pink ball',
      'blue present', 'yellow present', 'green present', 'brown present')),
    ('are on the same team in a soccer match. At the start of the match, they are each assigned'
     ' to a position:', '{} is playing {}',
     'As the game progresses, pairs of players occasionally swap positions.', 'trade positions',
     'At the end of the match, {} is playing', '{}',
     ('goalkeeper', 'left winger', 'center midfielder', 'cheerleader', 'right winger',
      'benchwarmer', 'right midfielder', 'striker', 'fullback', 'left midfielder')),
)

_LIARS = ('Sherrie', 'Vernell', 'Alexis', 'Michaela', 'Elanor', 'Kristian', 'Delbert', 'Jerry',
          'Shalonda', 'Vina', 'Helene', 'Kandi', 'Jamey', 'Ka', 'Christie', 'Leda', 'Lorine',
          'Tamika', 'Raymond', 'Willian', 'Shaunda', 'Teressa', 'Jaymie', 'Jim', 'Crista',
          'Bernita', 'Millicent', 'Fletcher', 'Conception', 'Rashida', 'Alejandro', 'Sal',
          'Amberly', 'Shenna', 'Audrie', 'Delfina', 'Millie', 'Phoebe', 'Inga', 'Gwenn',
          'Fidel', 'Osvaldo', 'Ryan', 'Yoland', 'Antwan', 'Andree', 'Maybelle', 'Michael',
          'Sima', 'Dallas')

_PAIRS = {'(': ')', '[': ']', '{': '}', '<': '>'}
_DYCK_PROMPT = ('Complete the rest of the sequence, making sure that the parentheses are closed'
                ' properly. Input: ')
_NAV_PROMPT = 'If you follow these instructions, do you return to the starting point?'
_NAV_OPTIONS = '\nOptions:\n- Yes\n- No'
_YES_NO = {True: 'Yes', False: 'No'}


def _bool_tokens(rng: random.Random, size: int) -> list[str]:
  """A random boolean expression of exactly `size` tokens."""
  if size == 1:
    return [rng.choice(('True', 'False'))]
  kind = rng.choice(('not', 'paren', 'op', 'op') if size >= 3 else ('not',))
  if kind == 'not':
    return ['not'] + _bool_tokens(rng, size - 1)
  if kind == 'paren':
    return ['('] + _bool_tokens(rng, size - 2) + [')']
  left = rng.randint(1, size - 2)
  return (_bool_tokens(rng, left) + [rng.choice(('and', 'or'))] +
          _bool_tokens(rng, size - 1 - left))


def _bool_value(tokens: list[str]) -> bool:
  """Evaluates a token list with Python precedence (not > and > or)."""
  pos = 0

  def parse(level):
    nonlocal pos
    if level == 2:
      if tokens[pos] == 'not':
        pos += 1
        return not parse(2)
      pos += 1
      if tokens[pos - 1] == '(':
        value = parse(0)
        pos += 1
        return value
      return tokens[pos - 1] == 'True'
    value = parse(level + 1)
    while pos < len(tokens) and tokens[pos] == ('or', 'and')[level]:
      pos += 1
      rhs = parse(level + 1)
      value = (value or rhs) if level == 0 else (value and rhs)
    return value

  return parse(0)


def _boolean_expressions(rng):
  want = rng.random() < 0.5
  while True:
    tokens = _bool_tokens(rng, 8)  # Every BBH expression has eight tokens.
    if _bool_value(tokens) == want:
      return ' '.join(tokens) + ' is', str(want)


def _balanced(rng: random.Random, pairs: int) -> list[str]:
  if not pairs:
    return []
  inner = rng.randint(0, pairs - 1)
  opener = rng.choice(tuple(_PAIRS))
  return ([opener] + _balanced(rng, inner) + [_PAIRS[opener]] +
          _balanced(rng, pairs - 1 - inner))


def _dyck_languages(rng):
  tokens, stack = [], []
  for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
    tokens += _balanced(rng, rng.choice((0, 0, 1, 2, 3, 5, 8)))
    stack.append(rng.choice(tuple(_PAIRS)))
    tokens.append(stack[-1])
  tokens += _balanced(rng, rng.choice((0, 0, 1, 2, 4, 6)))
  return _DYCK_PROMPT + ' '.join(tokens), ' '.join(_PAIRS[o] for o in reversed(stack))


def _flat_value(nums: list[int], ops: list[str]) -> int:
  """Evaluates n0 op n1 op ... with * binding tighter than + and -."""
  total, sign, term = 0, 1, nums[0]
  for op, num in zip(ops, nums[1:]):
    if op == '*':
      term *= num
    else:
      total, sign, term = total + sign * term, 1 if op == '+' else -1, num
  return total + sign * term


def _multistep_arithmetic_two(rng):
  groups, values = [], []
  for _ in range(2):
    nums = [rng.randint(-9, 9) for _ in range(4)]
    ops = [rng.choice('+-*') for _ in range(3)]
    words = [str(nums[0])] + [f'{op} {num}' for op, num in zip(ops, nums[1:])]
    groups.append('(' + ' '.join(words) + ')')
    values.append(_flat_value(nums, ops))
  outer = rng.choice('+-*')
  return f'({groups[0]} {outer} {groups[1]}) =', str(_flat_value(values, [outer]))


def _word_sorting(rng):
  words = rng.sample(_WORDS, rng.randint(3, 16))
  return 'Sort the following words alphabetically: List: ' + ' '.join(words), ' '.join(
      sorted(words))


def _object_counting(rng):
  category = rng.choice(tuple(_OBJECTS))
  kinds = rng.sample(_OBJECTS[category], rng.randint(2, min(10, len(_OBJECTS[category]))))
  items = [(kind, rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 5))) for kind in kinds]
  answer = sum(count for _, count in items)
  if category != 'objects' and rng.random() < 0.4:
    others = [k for c, ks in _OBJECTS.items() if c != category for k in ks]
    items += [(kind, rng.choice((1, 1, 2, 3))) for kind in rng.sample(others, rng.randint(1, 3))]
  rng.shuffle(items)
  phrases = [k.split('|')[0] if c == 1 else f"{_NUMBER_WORDS[c - 2]} {k.split('|')[1]}"
             for k, c in items]
  listing = ', '.join(phrases[:-1]) + ', and ' + phrases[-1]
  return f'I have {listing}. How many {category} do I have?', str(answer)


def _split_steps(rng: random.Random, total: int) -> list[int]:
  """Splits `total` steps into chunks of 1..10."""
  chunks = []
  while total > 0:
    chunks.append(min(total, rng.randint(1, 10)))
    total -= chunks[-1]
  return chunks


def _take(steps: int, direction: str = '') -> str:
  return f"Take {steps} step{'s' if steps > 1 else ''}{' ' + direction if direction else ''}."


def _navigate_forward(rng, want):
  moves = {'forward': (0, 1), 'backward': (0, -1), 'left': (-1, 0), 'right': (1, 0)}
  plan = [(rng.choice(tuple(moves)), rng.randint(1, 10)) for _ in range(rng.randint(1, 6))]
  x = sum(moves[d][0] * s for d, s in plan)
  y = sum(moves[d][1] * s for d, s in plan)
  if want:
    plan += [('left' if x > 0 else 'right', s) for s in _split_steps(rng, abs(x))]
    plan += [('backward' if y > 0 else 'forward', s) for s in _split_steps(rng, abs(y))]
    rng.shuffle(plan)
  elif x == y == 0:
    plan.append((rng.choice(tuple(moves)), rng.randint(1, 10)))
  return ['Always face forward.'] + [_take(s, d) for d, s in plan]


def _turns(rng: random.Random, delta: int) -> list[str]:
  """Instructions that turn right by `delta` quarter turns."""
  options = {0: [[]], 1: [['Turn right.']], 3: [['Turn left.']],
             2: [['Turn around.'], ['Turn around.'], ['Turn left.', 'Turn left.'],
                 ['Turn right.', 'Turn right.']]}
  return rng.choice(options[delta % 4])


def _navigate_turning(rng, want):
  heads = ((0, 1), (1, 0), (0, -1), (-1, 0))  # north, east, south, west
  lines, pos, heading = [], [0, 0], 0
  for j in range(rng.randint(2, 7)):
    if j == 0 or rng.random() < 0.6:
      steps = rng.randint(1, 10)
      lines.append(_take(steps))
      pos = [pos[0] + heads[heading][0] * steps, pos[1] + heads[heading][1] * steps]
    else:
      turn = rng.choice((1, 2, 3))
      lines += _turns(rng, turn)
      heading = (heading + turn) % 4
  if want:
    for axis, back in ((0, (3, 1)), (1, (2, 0))):
      if pos[axis]:
        target = back[0] if pos[axis] > 0 else back[1]
        lines += _turns(rng, target - heading)
        heading = target
        lines += [_take(s) for s in _split_steps(rng, abs(pos[axis]))]
    if rng.random() < 0.3:
      lines += _turns(rng, rng.choice((1, 2, 3)))
  elif pos == [0, 0]:
    lines.append(_take(rng.randint(1, 10)))
  return lines


def _navigate(rng):
  want = rng.random() < 0.5
  lines = (_navigate_forward if rng.random() < 0.5 else _navigate_turning)(rng, want)
  return f"{_NAV_PROMPT} {' '.join(lines)}{_NAV_OPTIONS}", _YES_NO[want]


def _tracking_shuffled_objects(rng):
  intro, hold, transition, verb, end, option, pool = rng.choice(_SHUFFLE_SCENARIOS)
  names = ['Alice', 'Bob', 'Claire']
  items = rng.sample(pool, 3)
  holding = list(range(3))
  swaps = []
  for word in ('First', 'Then', 'Finally'):
    a, b = rng.sample(range(3), 2)
    holding[a], holding[b] = holding[b], holding[a]
    swaps.append(f'{word}, {names[a]} and {names[b]} {verb}.')
  who = rng.randrange(3)
  start = ', '.join(hold.format(n, i) for n, i in zip(names[:2], items[:2]))
  start += ', and ' + hold.format(names[2], items[2])
  text = (f"Alice, Bob, and Claire {intro} {start}.\n{transition} {' '.join(swaps)}"
          f' {end.format(names[who])}\n' + bbh_more.options(option.format(i) for i in items))
  return text, bbh_more.letter(holding[who])


def _web_of_lies(rng):
  want = rng.random() < 0.5
  names = rng.sample(_LIARS, 5)
  truthful = rng.random() < 0.5
  claims = [rng.random() < 0.5 for _ in range(4)]
  honest = [truthful]
  for claim in claims:
    honest.append(claim == honest[-1])
  if honest[-1] != want:
    claims[-1] = not claims[-1]
  says = {True: 'tells the truth', False: 'lies'}
  parts = [f'{names[0]} {says[truthful]}.']
  parts += [f'{names[j + 1]} says {names[j]} {says[c]}.' for j, c in enumerate(claims)]
  return f"Question: {' '.join(parts)} Does {names[-1]} tell the truth?", _YES_NO[want]


_GENERATORS = {
    'boolean_expressions': _boolean_expressions,
    'dyck_languages': _dyck_languages,
    'multistep_arithmetic_two': _multistep_arithmetic_two,
    'navigate': _navigate,
    'object_counting': _object_counting,
    'tracking_shuffled_objects': _tracking_shuffled_objects,
    'web_of_lies': _web_of_lies,
    'word_sorting': _word_sorting,
}
_GENERATORS.update(sorted({**bbh_more.GENERATORS, **bbh_reasoning.GENERATORS}.items()))
TASKS = tuple(_GENERATORS)


def generate(task: str, seed: int, n: int) -> list[dict]:
  """Returns `n` items; each {'input': str, 'target': str} in BBH's own phrasing.

  Args:
    task: one of `TASKS`.
    seed: integer seed; item `i` depends only on (task, seed, i).
    n: number of items.

  Raises:
    ValueError: for an unknown task or a negative `n`.
  """
  if task not in _GENERATORS:
    raise ValueError(f"bbh task: unknown name {task!r}; known: {', '.join(TASKS)}")
  if n < 0:
    raise ValueError(f'bbh: n must be >= 0, got {n}')
  items = []
  for i in range(n):
    text, target = _GENERATORS[task](random.Random(f'bbh/{task}:{seed}:{i}'))
    items.append({'input': text, 'target': target})
  return items
