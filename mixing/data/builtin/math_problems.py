"""Seeded GSM8K-style grade-school math word problems.

Each problem is a dict with a natural-language `question`, a worked `solution` in GSM8K's
format (one sentence per step, each with a `<<expr=value>>` calculator annotation, then a
final `#### <answer>` line) and the final `answer` string. Each level is its own data domain
`math/<level>`:

  easy:   1-2 steps, every number below 100.
  medium: 2-4 steps, every number below 1000.
  hard:   4-6 steps, larger numbers, with multiplication, division and percentages.

Item `i` is drawn from its own RNG seeded with `f"math/{level}:{seed}:{i}"`, so the output is
deterministic and `generate(level, seed, n)[:k] == generate(level, seed, k)`.
"""

import ast
import collections
import fractions
import math
import random

LEVELS = ('easy', 'medium', 'hard')

_Person = collections.namedtuple('_Person', 'name he his him himself')
_FEMALE = ('Natalia', 'Maria', 'Aisha', 'Priya', 'Sofia', 'Emma', 'Chloe', 'Mei', 'Fatima',
           'Olivia', 'Grace', 'Hannah', 'Lucia', 'Zoe', 'Amara', 'Ingrid')
_MALE = ('James', 'Tom', 'Carlos', 'Ravi', 'Omar', 'Lucas', 'Ethan', 'Kenji', 'Daniel',
         'Samuel', 'Mateo', 'Noah', 'Jamal', 'Leo', 'Felix', 'Tariq')
_ITEMS = (('pencil', 'pencils'), ('sticker', 'stickers'), ('notebook', 'notebooks'),
          ('apple', 'apples'), ('cupcake', 'cupcakes'), ('toy car', 'toy cars'),
          ('marker', 'markers'), ('comic book', 'comic books'), ('bracelet', 'bracelets'))
_THINGS = ('marbles', 'stickers', 'seashells', 'baseball cards', 'stamps', 'crayons',
           'beads', 'coins', 'balloons', 'cookies')
_BIG_ITEMS = (('jacket', 'jackets'), ('pair of shoes', 'pairs of shoes'),
              ('lamp', 'lamps'), ('backpack', 'backpacks'), ('chair', 'chairs'))
_TIMES = {2: 'twice', 3: 'three times', 4: 'four times'}
_FRACTIONS = {2: 'Half', 3: 'A third', 4: 'A quarter', 5: 'A fifth'}


def _evaluate(expr: str) -> int:
  """Exactly evaluates `expr` (+ - * / on integers); the result must be a natural number."""

  def walk(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
      return fractions.Fraction(node.value)
    if isinstance(node, ast.BinOp):
      a, b = walk(node.left), walk(node.right)
      ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
      if isinstance(node.op, ast.Div):
        return a / b
      return ops[type(node.op)]
    raise ValueError(f'math: unsupported expression {expr!r}')

  value = walk(ast.parse(expr, mode='eval').body)
  if value.denominator != 1 or value < 0:
    raise ValueError(f'math: {expr!r} = {value} is not a natural number')
  return int(value)


class _Solution:
  """Accumulates GSM8K solution sentences, computing each annotation's value."""

  def __init__(self):
    self.lines = []
    self.last = None

  def step(self, before: str, expr: str, after: str = '.', money: bool = False) -> int:
    value = _evaluate(expr)
    dollar = '$' if money else ''
    self.lines.append(f'{before}{expr} = {dollar}<<{expr}={value}>>{value}{after}')
    self.last = value
    return value

  def text(self) -> str:
    return '\n'.join(self.lines + [f'#### {self.last}'])


def _people(rng: random.Random, k: int) -> list:
  names = rng.sample(_FEMALE + _MALE, k)
  return [_Person(n, 'she', 'her', 'her', 'herself') if n in _FEMALE else
          _Person(n, 'he', 'his', 'him', 'himself') for n in names]


# ---------------------------------------------------------------------------- easy (1-2 steps)


def _easy_shopping(rng, sol):
  p = _people(rng, 1)[0]
  _, many = rng.choice(_ITEMS)
  count, price = rng.randint(2, 9), rng.randint(2, 9)
  buys = f'buys {count} {many} that cost ${price} each.'
  if rng.random() < 0.5:
    sol.step(f'{p.name} spends ', f'{count}*{price}', money=True)
    return f'{p.name} {buys} How much money does {p.he} spend?'
  budget = rng.randint(count * price + 1, 99)
  cost = sol.step(f'The {many} cost ', f'{count}*{price}', ' in total.', money=True)
  sol.step(f'{p.name} has ', f'{budget}-{cost}', ' left.', money=True)
  return (f'{p.name} has ${budget}. {p.he.capitalize()} {buys} How much money does {p.he}'
          ' have left?')


def _easy_give_away(rng, sol):
  p, q = _people(rng, 2)
  things = rng.choice(_THINGS)
  have, give = rng.randint(20, 60), rng.randint(2, 19)
  question = f'{p.name} has {have} {things}. {p.he.capitalize()} gives {give} of them to {q.name}'
  left = sol.step(f'After giving some away, {p.name} has ', f'{have}-{give}', f' {things}.')
  if rng.random() < 0.4:
    return f'{question}. How many {things} does {p.name} have left?'
  found = rng.randint(2, 30)
  sol.step(f'After finding more, {p.name} has ', f'{left}+{found}', f' {things}.')
  return f'{question} and then finds {found} more. How many {things} does {p.name} have now?'


def _easy_share(rng, sol):
  p = _people(rng, 1)[0]
  things = rng.choice(_THINGS)
  friends, each = rng.randint(2, 6), rng.randint(2, 9)
  if rng.random() < 0.5:
    total = friends * each
    sol.step('Each friend gets ', f'{total}/{friends}', f' {things}.')
    return (f'{p.name} has {total} {things} and shares them equally among {friends} friends.'
            f' How many {things} does each friend get?')
  keep = rng.randint(1, 9)
  total = friends * each + keep
  rest = sol.step(f'{p.name} shares ', f'{total}-{keep}', f' {things}.')
  sol.step('Each friend gets ', f'{rest}/{friends}', f' {things}.')
  return (f'{p.name} has {total} {things}. {p.he.capitalize()} keeps {keep} for {p.himself} and'
          f' shares the rest equally among {friends} friends. How many {things} does each'
          ' friend get?')


def _easy_groups(rng, sol):
  boxes, per_box = rng.randint(2, 9), rng.randint(3, 9)
  things = rng.choice(('crayons', 'eggs', 'pencils', 'muffins', 'tennis balls'))
  in_boxes = sol.step('The boxes hold ', f'{boxes}*{per_box}', f' {things}.')
  question = f'There are {boxes} boxes with {per_box} {things} in each box'
  if rng.random() < 0.4:
    return f'{question}. How many {things} are in the boxes?'
  loose = rng.randint(1, 99 - in_boxes)
  sol.step('In all there are ', f'{in_boxes}+{loose}', f' {things}.')
  return f'{question}, and {loose} loose {things} on the table. How many {things} are there in all?'


def _easy_ages(rng, sol):
  a, b = _people(rng, 2)
  age, gap, later = rng.randint(4, 40), rng.randint(2, 30), rng.randint(2, 20)
  now = sol.step(f'{b.name} is ', f'{age}+{gap}', ' years old.')
  question = f'{a.name} is {age} years old. {b.name} is {gap} years older than {a.name}.'
  if rng.random() < 0.3:
    return f'{question} How old is {b.name}?'
  sol.step(f'In {later} years, {b.name} will be ', f'{now}+{later}', ' years old.')
  return f'{question} How old will {b.name} be in {later} years?'


def _easy_reading(rng, sol):
  p = _people(rng, 1)[0]
  pages, days = rng.randint(2, 12), rng.randint(2, 7)
  read = sol.step(f'{p.name} reads ', f'{pages}*{days}', ' pages.')
  question = f'{p.name} reads {pages} pages of a book every day'
  if rng.random() < 0.4:
    return f'{question}. How many pages does {p.he} read in {days} days?'
  book = rng.randint(read + 1, 99)
  sol.step('There are ', f'{book}-{read}', ' pages left.')
  return (f'{question}. The book has {book} pages. How many pages are left for {p.him} to read'
          f' after {days} days?')


# ------------------------------------------------------------------------- medium (2-4 steps)


def _medium_shopping(rng, sol):
  p = _people(rng, 1)[0]
  (_, many1), (_, many2) = rng.sample(_ITEMS, 2)
  a, pa, b, pb = rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 9), rng.randint(2, 15)
  cost1 = sol.step(f'The {many1} cost ', f'{a}*{pa}', money=True)
  cost2 = sol.step(f'The {many2} cost ', f'{b}*{pb}', money=True)
  total = sol.step(f'{p.name} spends ', f'{cost1}+{cost2}', ' in total.', money=True)
  question = f'{p.name} buys {a} {many1} for ${pa} each and {b} {many2} for ${pb} each.'
  if rng.random() < 0.4:
    return f'{question} How much money does {p.he} spend in total?'
  bill = next(x for x in (50, 100, 200, 500) if x > total)
  sol.step(f'{p.name} gets ', f'{bill}-{total}', ' in change.', money=True)
  return (f'{question} {p.he.capitalize()} pays with a ${bill} bill. How much change does'
          f' {p.he} get?')


def _medium_ages(rng, sol):
  a, b, c = _people(rng, 3)
  age, times = rng.randint(3, 30), rng.randint(2, 4)
  gap = rng.randint(1, min(9, times * age - 1))
  b_age = sol.step(f'{b.name} is ', f'{times}*{age}', ' years old.')
  c_age = sol.step(f'{c.name} is ', f'{b_age}-{gap}', ' years old.')
  sol.step('Together they are ', f'{age}+{b_age}+{c_age}', ' years old.')
  return (f'{a.name} is {age} years old. {b.name} is {_TIMES[times]} as old as {a.name}, and'
          f' {c.name} is {gap} year{"s" if gap > 1 else ""} younger than {b.name}. What is the'
          ' sum of their ages?')


def _medium_bakery(rng, sol):
  rate, hours, days = rng.randint(5, 20), rng.randint(4, 10), rng.randint(2, 6)
  while rate * hours * days >= 1000:
    days -= 1
  daily = sol.step('The bakery makes ', f'{rate}*{hours}', ' loaves each day.')
  question = f'A bakery makes {rate} loaves of bread every hour and is open {hours} hours a day.'
  if rng.random() < 0.4:
    sol.step(f'In {days} days it makes ', f'{daily}*{days}', ' loaves.')
    return f'{question} How many loaves does it make in {days} days?'
  unsold = rng.randint(1, 9)
  sold = sol.step('It sells ', f'{daily}-{unsold}', ' loaves each day.')
  sol.step(f'In {days} days it sells ', f'{sold}*{days}', ' loaves.')
  return (f'{question} Each day, {unsold} loaves are left unsold. How many loaves does the'
          f' bakery sell in {days} days?')


def _medium_leftover(rng, sol):
  p = _people(rng, 1)[0]
  bags, per_bag = rng.randint(3, 12), rng.randint(4, 30)
  ate, gave = rng.randint(2, 9), rng.randint(5, 40)
  total = bags * per_bag + ate + gave
  used = sol.step(f'{p.name} ate or gave away ', f'{ate}+{gave}', ' cookies.')
  rest = sol.step(f'{p.name} had ', f'{total}-{used}', ' cookies left to pack.')
  sol.step('Each bag has ', f'{rest}/{bags}', ' cookies.')
  return (f'{p.name} baked {total} cookies. {p.he.capitalize()} ate {ate} of them and gave {gave}'
          f' to {p.his} neighbors. {p.he.capitalize()} packed the rest equally into {bags} bags.'
          ' How many cookies are in each bag?')


def _medium_running(rng, sol):
  a, b = _people(rng, 2)
  x, d, y, e = rng.randint(3, 12), rng.randint(5, 30), rng.randint(2, 10), rng.randint(3, 20)
  while x * d <= y * e:
    d += 5
  dist_a = sol.step(f'{a.name} runs ', f'{x}*{d}', ' miles.')
  dist_b = sol.step(f'{b.name} runs ', f'{y}*{e}', ' miles.')
  sol.step(f'{a.name} runs ', f'{dist_a}-{dist_b}', f' more miles than {b.name}.')
  return (f'{a.name} runs {x} miles a day for {d} days. {b.name} runs {y} miles a day for {e}'
          f' days. How many more miles does {a.name} run than {b.name}?')


def _medium_savings(rng, sol):
  p = _people(rng, 1)[0]
  thing = rng.choice(('bike', 'guitar', 'video game console', 'telescope', 'skateboard'))
  weekly, weeks, have = rng.randint(5, 40), rng.randint(3, 15), rng.randint(10, 200)
  price = have + weekly * weeks
  need = sol.step(f'{p.name} still needs ', f'{price}-{have}', money=True)
  sol.step(f'It will take {p.him} ', f'{need}/{weekly}', ' weeks.')
  return (f'{p.name} wants to buy a {thing} that costs ${price}. {p.he.capitalize()} has already'
          f' saved ${have} and earns ${weekly} each week walking dogs. How many weeks will it'
          f' take {p.him} to have enough money?')


# --------------------------------------------------------------------------- hard (4-6 steps)


def _hard_discount(rng, sol):
  p = _people(rng, 1)[0]
  one, many = rng.choice(_BIG_ITEMS)
  price, pct, count = 20 * rng.randint(3, 25), 5 * rng.randint(1, 10), rng.randint(2, 9)
  ship = rng.randint(5, 60)
  off = sol.step('The discount is ', f'{price}*{pct}/100', ' per item.', money=True)
  sale = sol.step('Each item costs ', f'{price}-{off}', ' on sale.', money=True)
  items = sol.step(f'The {many} cost ', f'{count}*{sale}', ' in total.', money=True)
  total = sol.step(f'With delivery, {p.name} pays ', f'{items}+{ship}', money=True)
  budget = 100 * (total // 100 + rng.randint(1, 5))
  sol.step(f'{p.name} has ', f'{budget}-{total}', ' left.', money=True)
  return (f'A store sells each {one} for ${price}. During a sale, everything is {pct}% off.'
          f' {p.name} buys {count} {many} and pays ${ship} for delivery. If {p.he} started with'
          f' ${budget}, how much money does {p.he} have left?')


def _hard_farm(rng, sol):
  k, m = rng.sample(sorted(_FRACTIONS), 2)
  t, liters, days = rng.randint(3, 25), rng.randint(2, 9), rng.choice((7, 10, 14, 30))
  animals = k * m * t
  cows = sol.step('There are ', f'{animals}/{k}', ' cows.')
  rest = sol.step('That leaves ', f'{animals}-{cows}', ' other animals.')
  sheep = sol.step('There are ', f'{rest}/{m}', ' sheep.')
  goats = sol.step('There are ', f'{rest}-{sheep}', ' goats.')
  daily = sol.step('The goats give ', f'{goats}*{liters}', ' liters of milk a day.')
  sol.step(f'In {days} days they give ', f'{daily}*{days}', ' liters of milk.')
  return (f'A farm has {animals} animals. {_FRACTIONS[k]} of them are cows, and'
          f' {_FRACTIONS[m].lower()} of the remaining animals are sheep. The rest are goats. Each'
          f' goat gives {liters} liters of milk a day. How many liters of milk do the goats give'
          f' in {days} days?')


def _hard_wages(rng, sol):
  p = _people(rng, 1)[0]
  while True:
    wage, hours, days = rng.randint(12, 40), rng.randint(4, 9), rng.randint(3, 6)
    weeks, pct = rng.randint(2, 12), rng.choice((10, 15, 20, 25, 30, 40, 50))
    if (wage * hours * days * weeks * pct) % 100 == 0:
      break
  daily = sol.step(f'{p.name} earns ', f'{wage}*{hours}', ' a day.', money=True)
  weekly = sol.step(f'{p.name} earns ', f'{daily}*{days}', ' a week.', money=True)
  total = sol.step(f'In {weeks} weeks {p.he} earns ', f'{weekly}*{weeks}', money=True)
  saved = sol.step(f'{p.name} saves ', f'{total}*{pct}/100', money=True)
  question = (f'{p.name} earns ${wage} an hour. {p.he.capitalize()} works {hours} hours a day,'
              f' {days} days a week, and saves {pct}% of {p.his} pay.')
  if rng.random() < 0.5:
    return f'{question} How much money does {p.he} save in {weeks} weeks?'
  spend = rng.randint(1, saved)
  sol.step(f'{p.name} has ', f'{saved}-{spend}', ' of savings left.', money=True)
  return (f'{question} After {weeks} weeks, {p.he} spends ${spend} of {p.his} savings on a new'
          ' phone. How much of the savings is left?')


def _hard_stores(rng, sol):
  p = _people(rng, 1)[0]
  while True:
    a, b = rng.sample(range(4, 25), 2)
    pa, pb = rng.randint(2, 30), rng.randint(2, 30)
    need = a * b // math.gcd(a, b) * rng.randint(1, 4)
    if pa * b != pb * a and need >= 50:
      break
  packs_a = sol.step('At Store A, ', f'{need}/{a}', ' packs are needed.')
  cost_a = sol.step('Store A would cost ', f'{packs_a}*{pa}', money=True)
  packs_b = sol.step('At Store B, ', f'{need}/{b}', ' packs are needed.')
  cost_b = sol.step('Store B would cost ', f'{packs_b}*{pb}', money=True)
  hi, lo = max(cost_a, cost_b), min(cost_a, cost_b)
  sol.step(f'{p.name} saves ', f'{hi}-{lo}', ' by buying from the cheaper store.', money=True)
  return (f'{p.name} needs {need} pencils for {p.his} school. Store A sells packs of {a}'
          f' pencils for ${pa} per pack, and Store B sells packs of {b} pencils for ${pb} per'
          f' pack. How much money does {p.name} save by buying from the cheaper store?')


def _hard_library(rng, sol):
  while True:
    books, pct = 100 * rng.randint(5, 40), 5 * rng.randint(1, 8)
    boxes, per_box, shelves = rng.randint(3, 20), rng.randint(10, 40), rng.randint(4, 30)
    if (books - books * pct // 100 + boxes * per_box) % shelves == 0:
      break
  gone = sol.step('The library donated ', f'{books}*{pct}/100', ' books.')
  kept = sol.step('It kept ', f'{books}-{gone}', ' books.')
  new = sol.step('It bought ', f'{boxes}*{per_box}', ' new books.')
  total = sol.step('It then had ', f'{kept}+{new}', ' books.')
  sol.step('Each shelf holds ', f'{total}/{shelves}', ' books.')
  return (f'A library had {books} books. It donated {pct}% of them to a school and then bought'
          f' {boxes} boxes with {per_box} new books in each box. If the librarian puts all the'
          f' books equally on {shelves} shelves, how many books are on each shelf?')


def _hard_trip(rng, sol):
  p = _people(rng, 1)[0]
  while True:
    s1, h1, s2, h2 = rng.randint(30, 70), rng.randint(2, 6), rng.randint(30, 70), rng.randint(1, 5)
    mpg, price = rng.choice((20, 25, 30, 35, 40)), rng.randint(3, 6)
    if (s1 * h1 + s2 * h2) % mpg == 0:
      break
  first = sol.step(f'{p.name} first drives ', f'{s1}*{h1}', ' miles.')
  second = sol.step(f'{p.he.capitalize()} then drives ', f'{s2}*{h2}', ' miles.')
  miles = sol.step('The trip is ', f'{first}+{second}', ' miles long.')
  gallons = sol.step('The car uses ', f'{miles}/{mpg}', ' gallons of gas.')
  question = (f'{p.name} drives at {s1} miles per hour for {h1} hours and then at {s2} miles per'
              f' hour for {h2} hours. {p.his.capitalize()} car goes {mpg} miles on one gallon of'
              f' gas, and gas costs ${price} per gallon.')
  if rng.random() < 0.5:
    sol.step('Gas for the trip costs ', f'{gallons}*{price}', money=True)
    return f'{question} How much does {p.he} spend on gas for the trip?'
  cost = sol.step('Gas one way costs ', f'{gallons}*{price}', money=True)
  sol.step('Gas for the round trip costs ', f'{cost}*2', money=True)
  return f'{question} If {p.he} drives back the same way, how much does gas cost in total?'


_TEMPLATES = {
    'easy': (_easy_shopping, _easy_give_away, _easy_share, _easy_groups, _easy_ages,
             _easy_reading),
    'medium': (_medium_shopping, _medium_ages, _medium_bakery, _medium_leftover,
               _medium_running, _medium_savings),
    'hard': (_hard_discount, _hard_farm, _hard_wages, _hard_stores, _hard_library, _hard_trip),
}


def _make(level: str, seed: int, index: int) -> dict:
  rng = random.Random(f'math/{level}:{seed}:{index}')
  sol = _Solution()
  question = rng.choice(_TEMPLATES[level])(rng, sol)
  return {'question': question, 'solution': sol.text(), 'answer': str(sol.last)}


def generate(level: str, seed: int, n: int) -> list[dict]:
  """Returns `n` problems; each {'question': str, 'solution': str, 'answer': str}.

  Args:
    level: one of `LEVELS`.
    seed: integer seed; item `i` depends only on (level, seed, i).
    n: number of problems.

  Raises:
    ValueError: for an unknown level or a negative `n`.
  """
  if level not in LEVELS:
    raise ValueError(f"math level: unknown name {level!r}; known: {', '.join(LEVELS)}")
  if n < 0:
    raise ValueError(f'math: n must be >= 0, got {n}')
  return [_make(level, seed, i) for i in range(n)]
