"""More seeded BIG-Bench-Hard tasks (registered by `bbh_tasks`, which seeds and numbers items).

Each generator maps a `random.Random` to (input, target), phrased like the examples of the BBH
repo's `bbh/<task>.json`; targets are computed from the generated structure, never sampled, and
binary targets are balanced by drawing the wanted answer first. `letter`, `options`, `article` and
`listing` phrase multiple-choice blocks and lists for every task module.
"""

import datetime
import math


def letter(index: int) -> str:
  """The target for option `index`: '(A)', '(B)', ..."""
  return f'({chr(65 + index)})'


def options(choices) -> str:
  """BBH's multiple-choice block: 'Options:' and one '(A) choice' line per choice."""
  return 'Options:\n' + '\n'.join(f'{letter(j)} {c}' for j, c in enumerate(choices))


def article(phrase: str) -> str:
  """'a phrase' or 'an phrase' by its first letter."""
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def listing(phrases) -> str:
  """'x and y' for two phrases, 'x, y, and z' for more."""
  phrases = list(phrases)
  if len(phrases) == 2:
    return ' and '.join(phrases)
  return ', '.join(phrases[:-1]) + ', and ' + phrases[-1]


# ----------------------------------------------------------------------------- date_understanding
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')
_DAY = datetime.timedelta(days=1)
_DATE_QUESTIONS = (('today', 0), ('tomorrow', 1), ('yesterday', -1), ('24 hours later', 1),
                   ('one week ago from today', -7), ('one week from today', 7),
                   ('10 days ago', -10), ('one year ago from today', 'year'),
                   ('a month ago', 'month'))


def _short(d):
  return f'{_MONTHS[d.month - 1]} {d.day}, {d.year}'


def _slash(d):
  return f'{d.month}/{d.day}/{d.year}'


def _date_fact(rng, today):
  """(a sentence naming today's date indirectly, today) in one of BBH's phrasings."""
  kind, k = rng.randrange(10), rng.randint(2, 9)
  facts = (f'Today is {_short(today)}.', f'It is {_slash(today)} today.',
           f'Yesterday was {_slash(today - _DAY)}.', f'Tomorrow is {_slash(today + _DAY)}.',
           f'The day before yesterday was {_slash(today - 2 * _DAY)}.',
           f'Jane booked a flight for tomorrow, {_short(today + _DAY)}.',
           f'The deadline is {_short(today + k * _DAY)}, which is {k} days away from now.',
           f'Jane quited her job on {_short(today - 20 * k * _DAY)}. {20 * k} days have passed '
           'since then.')
  if kind == 8:
    return f'This is the last day of {today.year}.', datetime.date(today.year, 12, 31)
  if kind == 9:
    return f'Today is Christmas Eve of {today.year}.', datetime.date(today.year, 12, 24)
  return facts[kind], today


def _date_answer(today, delta):
  """The asked date, or None where the question has no single answer (Feb 29, a 31st)."""
  if delta == 'year':
    return None if (today.month, today.day) == (2, 29) else today.replace(year=today.year - 1)
  if delta == 'month':
    if today.day > 28:
      return None
    return (today.replace(month=today.month - 1) if today.month > 1 else
            today.replace(year=today.year - 1, month=12))
  return today + delta * _DAY


def _date_distractor(rng, answer, today):
  kind = rng.randrange(5)
  try:
    if kind == 0:
      return answer.replace(year=answer.year + rng.choice((-1, 1)) * rng.randint(1, 80))
    if kind == 1:
      return answer + rng.choice((-1, 1)) * rng.randint(1, 40) * _DAY
    if kind == 2:
      return answer.replace(month=rng.randint(1, 12))
    if kind == 3:
      return answer.replace(month=answer.day, day=answer.month)
  except ValueError:
    return None
  return today


def _date_understanding(rng):
  today = datetime.date(1900, 1, 1) + rng.randint(0, 130 * 365) * _DAY
  fact, today = _date_fact(rng, today)
  answer = None
  while answer is None:
    question, delta = rng.choice(_DATE_QUESTIONS)
    answer = _date_answer(today, delta)
  choices = [answer]
  while len(choices) < 6:
    other = _date_distractor(rng, answer, today)
    if other is not None and other not in choices and 1800 <= other.year <= 2100:
      choices.append(other)
  rng.shuffle(choices)
  text = f'{fact} What is the date {question} in MM/DD/YYYY?\n' + options(
      f'{d.month:02d}/{d.day:02d}/{d.year}' for d in choices)
  return text, letter(choices.index(answer))


# ----------------------------------------------------------------------------- geometric_shapes
_SHAPES = ('circle', 'heptagon', 'hexagon', 'kite', 'line', 'octagon', 'pentagon', 'rectangle',
           'sector', 'triangle')
_POLYGONS = {3: 'triangle', 5: 'pentagon', 6: 'hexagon', 7: 'heptagon', 8: 'octagon'}


def _pt(point) -> str:
  return f'{point[0]:.2f},{point[1]:.2f}'


def _turn(a, b, c) -> float:
  """|sin| of the turn at b (0 when a, b, c are collinear)."""
  u, v = (b[0] - a[0], b[1] - a[1]), (c[0] - b[0], c[1] - b[1])
  return abs(u[0] * v[1] - u[1] * v[0]) / (math.hypot(*u) * math.hypot(*v))


def _placed(rng, local):
  """Rotates and moves points given around the origin; rounds to BBH's two decimals."""
  cx, cy, theta = rng.uniform(30, 70), rng.uniform(30, 70), rng.uniform(0, 2 * math.pi)
  cos, sin = math.cos(theta), math.sin(theta)
  return [(round(cx + x * cos - y * sin, 2), round(cy + x * sin + y * cos, 2)) for x, y in local]


def _ngon(rng, n):
  """A simple n-gon (star-shaped around its center) with no straight angle."""
  while True:
    radius, start = rng.uniform(15, 28), rng.uniform(0, 2 * math.pi)
    local = []
    for j in range(n):
      angle = start + 2 * math.pi * (j + rng.uniform(-0.3, 0.3)) / n
      r = radius * rng.uniform(0.6, 1)
      local.append((r * math.cos(angle), r * math.sin(angle)))
    points = _placed(rng, local)
    if all(_turn(points[j - 2], points[j - 1], points[j]) > 0.2 for j in range(n)):
      return points


def _polygon_path(rng, points) -> str:
  """'M p0 L p1 ... L p0', sometimes restarting a segment ('M p L q M q L r') as BBH does."""
  parts = [f'M {_pt(points[0])}']
  for j, point in enumerate(points[1:] + points[:1]):
    parts.append(f'L {_pt(point)}')
    if j < len(points) - 1 and rng.random() < 0.3:
      parts.append(f'M {_pt(point)}')
  return ' '.join(parts)


def _shape_path(rng, shape) -> str:
  if shape == 'line':
    while True:
      a, b = [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(2)]
      if math.dist(a, b) > 10:
        return f'M {_pt(a)} L {_pt(b)}'
  if shape == 'kite':  # two pairs of equal adjacent sides; a != b, so never a rhombus
    a, b, w = rng.uniform(6, 12), rng.uniform(16, 28), rng.uniform(6, 16)
    shift = rng.randrange(4)
    local = [(0, -a), (w, 0), (0, b), (-w, 0)]
    return _polygon_path(rng, _placed(rng, local[shift:] + local[:shift]))
  if shape == 'rectangle':
    w, h = rng.uniform(6, 14), rng.uniform(18, 26)
    return _polygon_path(rng, _placed(rng, [(-w, -h), (w, -h), (w, h), (-w, h)]))
  c, r, rot = (rng.uniform(30, 70), rng.uniform(30, 70)), rng.uniform(10, 28), rng.uniform(0, 360)
  a = rng.uniform(0, 2 * math.pi)
  on_circle = lambda t, rx=r, ry=r: (c[0] + rx * math.cos(t), c[1] + ry * math.sin(t))
  if shape == 'sector':  # sweep-flag 1 follows increasing angle; the arc is under 180 degrees
    end = on_circle(a + rng.uniform(0.5, 2.6))
    return (f'M {_pt(c)} L {_pt(on_circle(a))} A {r:.2f},{r:.2f} {rot:.2f} 0,1 {_pt(end)} '
            f'L {_pt(c)}')
  rx, ry = r, (r if shape == 'circle' else r * rng.uniform(0.35, 0.75))
  if shape == 'ellipse':  # ends of the major axis, rotated by rot
    rot = math.degrees(a)
  p, q = on_circle(a), on_circle(a + math.pi)
  arc = f'A {rx:.2f},{ry:.2f} {rot:.2f} 1,0'
  return f'M {_pt(p)} {arc} {_pt(q)} {arc} {_pt(p)}'


def _geometric_shapes(rng):
  shape = rng.choice(_SHAPES + ('ellipse', 'pentagon', 'hexagon', 'heptagon', 'octagon'))
  sides = {name: n for n, name in _POLYGONS.items()}
  path = _polygon_path(rng, _ngon(rng, sides[shape])) if shape in sides else _shape_path(rng, shape)
  choices = _SHAPES + (('ellipse',) if shape == 'ellipse' else ())
  text = f'This SVG path element <path d="{path}"/> draws a\n' + options(choices)
  return text, letter(choices.index(shape))


# ----------------------------------------------------------------------------- hyperbaton
ADJECTIVES = (  # in English order: opinion, size, age, shape, color, origin, material, purpose
    ('obnoxious', 'lovely', 'nice', 'good', 'terrible', 'wonderful', 'silly', 'repulsive',
     'mysterious', 'awful', 'ridiculous'),
    ('big', 'small', 'tiny', 'enormous', 'huge', 'massive', 'large', 'little', 'midsize',
     'medium-size', 'normal-size'),
    ('old', 'new', 'ancient', 'archaic', 'brand-new', 'old-fashioned'),
    ('square', 'circular', 'triangular', 'rectangular', 'spherical', 'pyramidal', 'prismlike'),
    ('red', 'blue', 'green', 'yellow', 'black', 'white', 'grey', 'gray', 'pink', 'purple',
     'brown', 'tan', 'orange'),
    ('American', 'Chinese', 'Japanese', 'Indian', 'Egyptian', 'Mexican', 'Brazilian', 'Russian',
     'Turkish', 'Nigerian', 'Filipino', 'Thai', 'Vietnamese', 'Pakistani', 'Congolese', 'German'),
    ('wool', 'rubber', 'leather', 'paper', 'cardboard', 'glass', 'steel', 'iron', 'plastic',
     'cloth', 'wood', 'fiberglass'),
    ('smoking', 'hiking', 'driving', 'walking', 'typing', 'exercise', 'snorkeling', 'drinking',
     'eating', 'whittling'),
)
_HYPERBATON_NOUNS = ('ship', 'sweater', 'cat', 'motorcycle', 'surfboard', 'knife', 'dog', 'chair',
                     'car', 'computer', 'monkey', 'shoe', 'sock', 'baby', 'match')


def _hyperbaton(rng):
  words = [rng.choice(ADJECTIVES[k]) for k in sorted(rng.sample(range(8), rng.randint(2, 5)))]
  wrong = list(words)
  while wrong == words:
    rng.shuffle(wrong)
  pair = [words, wrong] if rng.random() < 0.5 else [wrong, words]
  noun = rng.choice(_HYPERBATON_NOUNS)
  text = 'Which sentence has the correct adjective order:\n' + options(
      ' '.join(p + [noun]) for p in pair)
  return text, letter(pair.index(words))


# ----------------------------------------------------------------------------- penguins_in_a_table
_PENGUINS = ('Louis', 'Bernard', 'Vincent', 'Gwen', 'James', 'Ada', 'Otto', 'Hazel', 'Oscar',
             'Iris', 'Rocky', 'Skipper', 'Tux', 'Wanda', 'Mumble', 'Pingu')
_PENGUIN_HEADER = ('Here is a table where the first line is a header and each subsequent line is a'
                   ' penguin:  name, age, height (cm), weight (kg)')


def _penguin_question(rng, table, rows):
  """(question, answer, choices) about the final `table`; `rows` are all five penguins drawn."""
  names, ages = [r[0] for r in table], [r[1] for r in table]
  counts = [str(k) for k in range(1, 6)]
  kind = rng.randrange(8)
  if kind == 0:
    x = rng.randint(1, max(ages) - 1)
    return (f'How many penguins are more than {x} years old?', str(sum(a > x for a in ages)),
            counts)
  if kind == 1:
    x = rng.randint(min(ages) + 1, 16)
    return (f'How many penguins are less than {x} years old?', str(sum(a < x for a in ages)),
            counts)
  if kind == 2:
    return 'How many penguins are there in the table?', str(len(table)), counts
  every = [r[0] for r in rows]
  if kind == 3:
    oldest = rng.random() < 0.5
    pick = (max if oldest else min)(table, key=lambda r: r[1])
    return f"Which is the {'oldest' if oldest else 'youngest'} penguin?", pick[0], every
  if kind == 4:
    return 'Which penguin is taller than the other ones?', max(table, key=lambda r: r[2])[0], every
  if kind == 5:
    row = rng.choice(table)
    return f'What is the name of the penguin that is {row[2]} cm tall?', row[0], every
  if kind == 6:
    row = rng.choice(table)
    return f'What is the age of {row[0]}?', str(row[1]), [str(r[1]) for r in rows]
  last = rng.random() < 0.5
  pick = (max if last else min)(names)
  return (f"What is the name of the {'last' if last else 'first'} penguin sorted by alphabetic "
          'order?', pick, every)


def _penguins_in_a_table(rng):
  rows = list(zip(rng.sample(_PENGUINS, 5), rng.sample(range(1, 16), 5),
                  rng.sample(range(40, 125, 5), 5), [rng.randint(5, 30) for _ in range(5)]))
  table = rows[:4]
  text = _PENGUIN_HEADER + ''.join(f' {n}, {a}, {h}, {w}' for n, a, h, w in table)
  text += (f'  For example: the age of {table[0][0]} is {table[0][1]}, the weight of '
           f'{table[3][0]} is {table[3][3]} kg, the height of {table[1][0]} is {table[1][2]} cm.  ')
  if rng.random() < 0.4:
    text += 'We now add a penguin to the table:\n' + ', '.join(map(str, rows[4])) + '\n'
    table = rows
  if rng.random() < 0.3:
    gone = rng.choice(table)
    text += f'We then delete the penguin named {gone[0]} from the table.\n'
    table = [r for r in table if r != gone]
  question, answer, choices = _penguin_question(rng, table, rows)
  return f'{text}{question}\n{options(choices)}', letter(choices.index(answer))


# ----------------------------------------------------------------------------- temporal_sequences
_PEOPLE = ('Susan', 'Emily', 'James', 'Jason', 'Elizabeth', 'Ashley', 'Sarah', 'Leslie', 'Hannah',
           'Betty', 'Sean', 'Jessica', 'Lisa', 'Tiffany', 'Linda', 'William', 'Andrew', 'Richard',
           'David', 'Michael', 'Nancy', 'Mary', 'Samantha', 'Thomas', 'Steven', 'Jennifer')
_ACTIVITIES = ('reading at the library', 'buying clothes at the mall', 'buying lunch at the deli',
               'taking photos near the Eiffel Tower', 'waiting at the airport',
               'working out at the gym', 'watching a movie at the theater',
               'getting a coffee at the cafe', 'walking in the garden', 'sitting on a rooftop',
               'waiting at the train station', 'working at the office',
               'attending class at the school', 'buying a bike at the bike shop',
               'stretching at a yoga studio', 'buying cookies at a bakery',
               'driving to the water park')
_PLACES = ('coffee shop', 'soccer field', 'restaurant', 'beach', 'amusement park', 'bookstore',
           'construction site', 'orchestra hall', 'art studio', 'clothing store', 'park',
           'physics classroom', 'art show', 'basketball court', 'football field', 'market')


def _hour(h: int) -> str:
  return f"{(h - 1) % 12 + 1}{'am' if h < 12 else 'pm'}"


def _temporal_sequences(rng):
  person, *seers = rng.sample(_PEOPLE, 4)
  place, wake, sightings = rng.choice(_PLACES), rng.randint(5, 11), rng.choice((2, 3))
  cuts = sorted(rng.sample(range(wake + 1, 22), sightings))
  bounds = [wake] + cuts + [rng.randint(cuts[-1] + 1, 22)]
  slots = [f'{_hour(a)} to {_hour(b)}' for a, b in zip(bounds, bounds[1:])]
  free = rng.randrange(len(slots))  # the one slot nobody saw them in
  busy = [s for j, s in enumerate(slots) if j != free]
  seen = [f'{seer} saw {person} {act} from {slot}.'
          for seer, act, slot in zip(seers, rng.sample(_ACTIVITIES, sightings), busy)]
  order = rng.sample(range(len(slots)), len(slots))
  text = (f'Today, {person} went to the {place}. Between what times could they have gone?\n'
          f'We know that:\n{person} woke up at {_hour(wake)}.\n' + '\n'.join(seen) +
          f'\nThe {place} was closed after {_hour(bounds[-1])}.\n'
          f'Between what times could {person} have gone to the {place}?\n' +
          options(slots[j] for j in order))
  return text, letter(order.index(free))


# ----------------------------------------------------------------------------- sports_understanding
# sport: (athletes who played only it, actions of it, a final every listed athlete has played in)
SPORTS = {
    'football': (('Tom Brady', 'Patrick Mahomes', 'Aaron Rodgers', 'Travis Kelce', 'Drew Brees'),
                 ('converted the first down', 'gained five yards', 'was flagged on the play',
                  'got into the endzone', 'drew a flag on the play'), 'in the Superbowl'),
    'basketball': (('LeBron James', 'Stephen Curry', 'Kevin Durant', 'Giannis Antetokounmpo',
                    'Luka Doncic'),
                   ('beat the buzzer', 'took a charge', 'committed a blocking foul',
                    'banked the shot in', 'shot from beyond the arc'), 'in the NBA Championship'),
    'soccer': (('Lionel Messi', 'Cristiano Ronaldo', 'Neymar', 'Robert Lewandowski',
                'Kylian Mbappe'),
               ('took a throw in', 'scored a penalty kick', 'committed a handball',
                'scored in added time', 'nutmegged the defender'), 'in the Champions League Final'),
    'hockey': (('Sidney Crosby', 'Connor McDavid', 'Alex Ovechkin', 'Patrick Kane',
                'Nathan MacKinnon'),
               ('passed the puck', 'skated behind the net', 'took to the ice',
                'earned a trip to the penalty box', 'crossed the blue line'), 'in the Stanley Cup'),
    'baseball': (('Mookie Betts', 'Aaron Judge', 'Bryce Harper', 'Freddie Freeman', 'Juan Soto'),
                 ('was safe at first', 'got a base hit', 'watched the pitch go by',
                  'walked on ball four', 'was out at second'), 'in the World Series'),
}


def _sports_understanding(rng):
  want = rng.random() < 0.5
  sport = rng.choice(tuple(SPORTS))
  other = sport if want else rng.choice([s for s in SPORTS if s != sport])
  _, actions, final = SPORTS[other]
  sentence = rng.choice(SPORTS[sport][0]) + ' ' + rng.choice(actions)
  if rng.random() < 0.3:
    sentence += ' ' + final
  return f'Is the following sentence plausible? "{sentence}."', 'yes' if want else 'no'


GENERATORS = {
    'date_understanding': _date_understanding,
    'geometric_shapes': _geometric_shapes,
    'hyperbaton': _hyperbaton,
    'penguins_in_a_table': _penguins_in_a_table,
    'sports_understanding': _sports_understanding,
    'temporal_sequences': _temporal_sequences,
}
