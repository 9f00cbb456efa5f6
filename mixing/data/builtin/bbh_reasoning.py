"""Seeded BIG-Bench-Hard tasks that reason over stated facts (registered by `bbh_tasks`).

formal_fallacies draws arguments in monadic predicate logic and decides their validity by checking
every model (each set of realized predicate combinations, each place for the named individual);
logical_deduction_three_objects keeps drawing two true statements about a hidden order until they
fix it; reasoning_about_colored_objects answers from the listed objects. Phrasing follows the BBH
repo's `bbh/<task>.json` examples, and generators follow `bbh_more`'s contract.
"""

import itertools

from mixing.data.builtin.bbh_more import article, letter, listing, options

# ----------------------------------------------------------------------------- formal_fallacies
_FAMILY = ('cousin', 'brother', 'nephew', 'uncle', 'grandson', 'son', 'half-brother', 'stepbrother',
           'classmate', 'schoolmate', 'workmate', 'close friend', 'ancestor', 'great-grandfather')
_RELATIVES = ('Chris', 'Kermit', 'Fernando', 'Lowell', 'Leroy', 'Cody', 'Ivan', 'Owen', 'Tyler',
              'Reyes', 'Earl', 'Calvin', 'Barton', 'Dominic', 'Todd', 'Kenneth', 'Jeffery',
              'Ahmed', 'Ronny', 'Carmelo', 'Clifford', 'Jonathan')
_FANS = ('fan', 'ex-fan', 'supporter', 'ex-supporter', 'follower', 'admirer', 'critic', 'devotee',
         'backer', 'expert', 'member', 'friend')
_CLUBS = ('Liverpool FC', 'FC Utrecht', 'Everton', 'Celtic FC', 'AS Roma', 'SL Benfica', 'FC Porto',
          'Valencia CF', 'Sevilla FC', 'AFC Ajax', 'Galatasaray', 'Feyenoord', 'Juventus',
          'Chelsea FC', 'Arsenal FC')
_INDIVIDUALS = ('Cecil', 'Jose', 'Lesley', 'Greg', 'Marvin', 'Rosa', 'Tracy', 'Wilma')
_SHORT_INTRO = 'Here comes a perfectly valid argument:'  # BBH says so of invalid ones too
_LONG_INTROS = {
    'family': 'It is not always easy to see who is related to whom -- and in which ways. The '
              'following argument pertains to this question:',
    'fans': 'Some football fans admire various clubs, others love only a single team. But who is a '
            'fan of whom precisely? The following argument pertains to this question:',
}
_PREMISE_LEADS = (('First, ', 'Second, '), ('To begin with, ', 'Moreover, '),
                  ('First premise: ', 'Second premise: '), ('First of all, ', 'Next, '), ('', ''))
_CONCLUSION_LEADS = ('Therefore, ', 'Hence, ', 'So, necessarily, ', 'It follows that ',
                     'We may conclude that ', 'In consequence, ', 'All this entails that ',
                     'We may conclude: ', 'From this follows: ')
_VALIDITY_QUESTION = ('\nIs the argument, given the explicitly stated premises, deductively valid'
                      ' or invalid?\nOptions:\n- valid \n- invalid')
# A model of monadic logic over three predicates: the non-empty set of predicate combinations
# (types) that something realizes; the named individual has one of them.
_TYPES = tuple(itertools.product((False, True), repeat=3))
_WORLDS = tuple(w for k in range(1, 9) for w in itertools.combinations(_TYPES, k))


def _holds(formula, world, me) -> bool:
  """Formulas: ('ind', lit, None), ('all', lit, (lit, ...)) (a disjunction), ('some', lit, lit).

  A literal is (predicate index, positive).
  """
  kind, a, b = formula
  lit = lambda l, t: t[l[0]] == l[1]
  if kind == 'ind':
    return lit(a, me)
  if kind == 'some':
    return any(lit(a, t) and lit(b, t) for t in world)
  return all(not lit(a, t) or any(lit(l, t) for l in b) for t in world)


def is_valid(premises, conclusion) -> bool:
  """Whether the conclusion holds in every model of the premises (checked exhaustively)."""
  return all(_holds(conclusion, world, me) for world in _WORLDS for me in world
             if all(_holds(p, world, me) for p in premises))


def _argument(rng):
  """(premises, conclusion) of one of five argument shapes, each literal's sign drawn."""
  s = lambda p: (p, rng.random() < 0.6)
  kind = rng.randrange(5)
  if kind == 0:  # modus ponens / tollens, affirming the consequent, denying the antecedent
    x, y = rng.choice(((0, 1), (1, 0)))
    return [('ind', s(0), None), ('all', s(x), (s(y),))], ('ind', s(1), None)
  if kind == 1:  # chains
    second = ('all', s(1), (s(2),)) if rng.random() < 0.7 else ('all', s(2), (s(1),))
    return [('all', s(0), (s(1),)), second], ('all', s(0), (s(2),))
  if kind == 2:  # disjunctive syllogism
    return [('all', s(0), (s(1), s(2))), ('all', s(0), (s(2),))], ('all', s(0), (s(1),))
  if kind == 3:  # existential
    return [('some', s(0), s(1)), ('all', s(1), (s(2),))], ('some', s(0), s(2))
  return [('all', s(0), (s(1),))], ('all', s(1), (s(0),))  # conversion / contraposition


def _say(rng, formula, preds, name) -> str:
  """One English clause for a formula, in a phrasing BBH uses and that its signs allow."""
  kind, a, b = formula
  is_ = lambda l: ('' if l[1] else 'not ') + article(preds[l[0]])
  being = lambda l: ('being ' if l[1] else 'not being ') + article(preds[l[0]])
  if kind == 'ind':
    if not a[1] and rng.random() < 0.3:
      return f'it is not the case that {name} is {article(preds[a[0]])}'
    return f'{name} is {is_(a)}'
  if kind == 'some':
    forms = [f'somebody is {is_(a)} and {is_(b)}']
    if a[1]:
      forms.append(f'some {preds[a[0]]} is {is_(b)}')
    if a[1] and not b[1]:
      forms.append(f'not every {preds[a[0]]} is {article(preds[b[0]])}')
    return rng.choice(forms)
  rhs = ' or '.join(is_(l) for l in sorted(b, key=lambda l: not l[1]))  # 'a P or not a Q'
  forms = [f'whoever is {is_(a)} is {rhs}']
  if a[1]:
    forms.append(f'every {preds[a[0]]} is {rhs}')
  if len(b) == 1:
    forms += [f'{being(a)} is sufficient for {being(b[0])}',
              f'{being(b[0])} is necessary for {being(a)}',
              f'everyone who is {is_(a)} is {rhs}, too']
    if a[1] and not b[0][1]:
      forms.append(f'no {preds[a[0]]} is {article(preds[b[0][0]])}')
  return rng.choice(forms)


def _sentence(lead: str, clause: str) -> str:
  if not lead or lead.endswith(': '):
    clause = clause[0].upper() + clause[1:]
  return f'{lead}{clause}.'


def _formal_fallacies(rng):
  want = rng.random() < 0.5
  premises, conclusion = _argument(rng)
  while is_valid(premises, conclusion) != want:
    premises, conclusion = _argument(rng)
  rng.shuffle(premises)
  domain = rng.choice(tuple(_LONG_INTROS))
  intro = _LONG_INTROS[domain] if rng.random() < 0.3 else _SHORT_INTRO
  relations, objects = (_FAMILY, _RELATIVES) if domain == 'family' else (_FANS, _CLUBS)
  preds = [f'{r} of {o}' for r, o in zip(rng.sample(relations, 3), rng.sample(objects, 3))]
  name = rng.choice(_INDIVIDUALS)
  leads = rng.choice(_PREMISE_LEADS)
  parts = [_sentence(lead, _say(rng, p, preds, name)) for lead, p in zip(leads, premises)]
  parts.append(_sentence(rng.choice(_CONCLUSION_LEADS), _say(rng, conclusion, preds, name)))
  return f'"{intro} {" ".join(parts)}"' + _VALIDITY_QUESTION, 'valid' if want else 'invalid'


# ----------------------------------------------------------------------------- logical_deduction
_DEDUCTION_PREFIX = ('The following paragraphs each describe a set of three objects arranged in a '
                     'fixed order. The statements are logically consistent within each paragraph. ')
# (intro, objects, listed with an article, named with 'the', (before, after), ranks first to last)
_ORDERINGS = (
    ('On a shelf, there are three books:',
     ('white', 'green', 'orange', 'blue', 'red', 'gray', 'purple', 'yellow', 'black', 'brown'),
     True, True, ('is to the left of', 'is to the right of'),
     ('is the leftmost', 'is the second from the left', 'is the rightmost')),
    ('On a branch, there are three birds:',
     ('blue jay', 'quail', 'falcon', 'robin', 'crow', 'hummingbird', 'raven', 'owl', 'cardinal'),
     True, True, ('is to the left of', 'is to the right of'),
     ('is the leftmost', 'is the second from the left', 'is the rightmost')),
    ('In a golf tournament, there were three golfers:',
     ('Eve', 'Rob', 'Mel', 'Amy', 'Eli', 'Ada', 'Mya', 'Joe', 'Dan', 'Ana'),
     False, False, ('finished above', 'finished below'),
     ('finished first', 'finished second', 'finished last')),
    ('In an antique car show, there are three vehicles:',
     ('limousine', 'convertible', 'tractor', 'truck', 'minivan', 'bus', 'sedan', 'hatchback',
      'station wagon'),
     True, True, ('is older than', 'is newer than'),
     ('is the oldest', 'is the second-newest', 'is the newest')),
    ('A fruit stand sells three fruits:',
     ('apples', 'peaches', 'mangoes', 'oranges', 'loquats', 'watermelons', 'kiwis', 'plums',
      'pears', 'cantaloupes'),
     False, True, ('are less expensive than', 'are more expensive than'),
     ('are the cheapest', 'are the second-most expensive', 'are the most expensive')),
)


def _orders_allowed(facts, rank) -> int:
  """How many orders of the three objects agree with `rank` on every fact (i, j) or (i, None)."""
  return sum(all(perm[i] == rank[i] if j is None else (perm[i] < perm[j]) == (rank[i] < rank[j])
                 for i, j in facts) for perm in itertools.permutations(range(3)))


def _logical_deduction_three_objects(rng):
  intro, pool, with_article, with_the, relations, ranks = rng.choice(_ORDERINGS)
  objects = rng.sample(pool, 3)
  if intro.startswith('On a shelf'):
    objects = [f'{o} book' for o in objects]
  rank = rng.sample(range(3), 3)  # rank[i]: the position of objects[i], first to last
  name = lambda i: f'the {objects[i]}' if with_the else objects[i]
  cap = lambda i: name(i)[0].upper() + name(i)[1:]
  facts = [(i, j) for i in range(3) for j in [None] + [k for k in range(3) if k != i]]
  chosen = rng.sample(facts, 2)
  while _orders_allowed(chosen, rank) != 1:
    chosen = rng.sample(facts, 2)
  said = [f'{cap(i)} {ranks[rank[i]]}.' if j is None else
          f'{cap(i)} {relations[rank[i] > rank[j]]} {name(j)}.' for i, j in chosen]
  asked = rng.randrange(3)
  shown = listing(article(o) if with_article else o for o in objects)
  text = (f"{_DEDUCTION_PREFIX}{intro} {shown}. {' '.join(said)}\n" +
          options(f'{cap(i)} {ranks[asked]}' for i in range(3)))
  return text, letter(rank.index(asked))


# ----------------------------------------------------------------------------- colored objects
COLORS = ('red', 'orange', 'yellow', 'green', 'blue', 'brown', 'magenta', 'fuchsia', 'mauve',
           'teal', 'turquoise', 'burgundy', 'silver', 'gold', 'black', 'grey', 'purple', 'pink')
_THINGS = ('pencil', 'mug', 'keychain', 'teddy bear', 'plate', 'stress ball', 'cup', 'notebook',
           'jug', 'fidget spinner', 'sheet of paper|sheets of paper', 'envelope', 'puzzle',
           'bracelet', 'pen', 'crayon', 'booklet', 'paperclip', 'necklace',
           'dog leash|dog leashes', 'cat toy', 'textbook', 'pair of sunglasses|pairs of sunglasses')
_SURFACES = ('floor', 'table', 'desk', 'nightstand')
COUNTS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten',
           'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen')


def _forms(thing: str) -> tuple[str, str]:
  """(singular, plural)."""
  return tuple(thing.split('|')) if '|' in thing else (thing, thing + 's')


def _colored_row(rng, surface, noun, things, colors, shown):
  n = len(things)
  group = rng.choice(('a set of', 'a bunch of', 'several', 'the following'))
  text = f'On the {surface}, you see {group} {noun}s arranged in a row: {shown}. '
  ref = lambda j: things[j] if rng.random() < 0.5 else f'{COLORS[colors[j]]} {noun}'
  side, kind = rng.choice(('left', 'right')), rng.randrange(4)
  if kind == 0:
    j = rng.randrange(1, n) if side == 'left' else rng.randrange(n - 1)
    answer = colors[j - 1 if side == 'left' else j + 1]
    question = f'What is the color of the {noun} directly to the {side} of the {ref(j)}?'
  elif kind == 1:
    answer = colors[0 if side == 'left' else -1]
    question = f'What is the color of the {side}-most {noun}?'
  elif kind == 2:
    j = rng.choice([k for k in range(n) if 2 * k != n - 1])  # the middle one has two furthest
    answer = colors[-1 if 2 * j < n - 1 else 0]
    question = f'What is the color of the {noun} furthest from the {ref(j)}?'
  else:
    j, color = rng.randrange(n), rng.choice(colors + [rng.randrange(len(COLORS))])
    span = range(j) if side == 'left' else range(j + 1, n)
    question = (f'How many non-{COLORS[color]} {noun}s do you see to the {side} of the '
                f'{ref(j)}?')
    return text + question + '\n' + options(COUNTS[:7]), letter(sum(colors[k] != color
                                                                      for k in span))
  return text + question + '\n' + options(COLORS), letter(answer)


def _colored_removal(rng, surface, noun):
  colors = rng.sample(range(len(COLORS)), rng.randint(2, 3))
  kinds = [_forms(t) for t in rng.sample(_THINGS, rng.randint(2, 3))]
  pairs = [(c, k) for c in colors for k in range(len(kinds))]
  piles = [(c, k, rng.randint(1, 3))
           for c, k in rng.sample(pairs, rng.randint(3, min(5, len(pairs))))]
  shown = listing(f'{COUNTS[m]} {COLORS[c]} {kinds[k][m > 1]}' for c, k, m in piles)
  opener = rng.choice(('there is' if piles[0][2] == 1 else 'there are', 'I see', 'you see'))
  color, kind = rng.choice(colors), rng.randrange(len(kinds))
  if rng.random() < 0.5:
    question = (f'If I remove all the {COLORS[color]} {noun}s from the {surface}, how many '
                f'{kinds[kind][1]} remain on it?')
    count = sum(m for c, k, m in piles if c != color and k == kind)
  else:
    question = (f'If I remove all the {kinds[kind][1]} from the {surface}, how many '
                f'{COLORS[color]} {noun}s remain on it?')
    count = sum(m for c, k, m in piles if c == color and k != kind)
  return f'On the {surface}, {opener} {shown}. {question}\n' + options(COUNTS), letter(count)


def _reasoning_about_colored_objects(rng):
  surface, noun = rng.choice(_SURFACES), rng.choice(('thing', 'item', 'object'))
  kind = rng.randrange(5)
  if kind == 4:
    return _colored_removal(rng, surface, noun)
  n = rng.randint(3 if kind == 3 else 2, 6)
  things = [_forms(t)[0] for t in rng.sample(_THINGS, n)]
  colors = rng.sample(range(len(COLORS)), n)
  shown = listing(article(f'{COLORS[c]} {t}') for c, t in zip(colors, things))
  if kind == 3:
    return _colored_row(rng, surface, noun, things, colors, shown)
  text = f"On the {surface}, {rng.choice(('there is', 'I see', 'you see'))} {shown}. "
  j = rng.randrange(n)
  if kind == 0:
    return text + f'What color is the {things[j]}?\n' + options(COLORS), letter(colors[j])
  if kind == 1:
    want = rng.random() < 0.5
    asked = colors[j] if want else rng.choice([c for c in range(len(COLORS)) if c != colors[j]])
    return (text + f'Is the {things[j]} {COLORS[asked]}?\n' + options(('yes', 'no')),
            letter(0 if want else 1))
  absent = [c for c in range(len(COLORS)) if c not in colors]
  c1, c2 = rng.sample(colors + rng.sample(absent, 2), 2)
  count = sum(c not in (c1, c2) for c in colors)
  return (text + f'How many {noun}s are neither {COLORS[c1]} nor {COLORS[c2]}?\n' +
          options(COUNTS[:7]), letter(count))


GENERATORS = {
    'formal_fallacies': _formal_fallacies,
    'logical_deduction_three_objects': _logical_deduction_three_objects,
    'reasoning_about_colored_objects': _reasoning_about_colored_objects,
}
