"""Tests for the seeded math (GSM8K-style) and BIG-Bench-Hard generators.

BBH targets are recomputed here by checkers written independently of the generators; the
checkers are first validated on real examples copied from the BBH repo.
"""

import re
import statistics

import pytest

from mixing.data.builtin import bbh_tasks
from mixing.data.builtin import math_problems

_ANNOTATION = re.compile(r'<<([^=<>]+)=([^<>]+)>>')
_BOUND = {'easy': 100, 'medium': 1000}
_STEPS = {'easy': (1, 2), 'medium': (2, 4), 'hard': (4, 6)}


# ------------------------------------------------------------------------------------- math


@pytest.mark.parametrize('level', math_problems.LEVELS)
def test_math_is_deterministic_with_prefix_property(level):
  items = math_problems.generate(level, 7, 30)
  assert items == math_problems.generate(level, 7, 30)
  assert items[:11] == math_problems.generate(level, 7, 11)
  assert math_problems.generate(level, 7, 0) == []
  assert items != math_problems.generate(level, 8, 30)
  assert len({item['question'] for item in items}) >= 25


@pytest.mark.parametrize('level', math_problems.LEVELS)
def test_math_solutions_are_correct(level):
  for item in math_problems.generate(level, 3, 200):
    assert set(item) == {'question', 'solution', 'answer'}
    *steps, final = item['solution'].split('\n')
    assert final == f"#### {item['answer']}"
    assert re.fullmatch(r'\d+', item['answer'])
    assert item['question'].endswith('?')
    lo, hi = _STEPS[level]
    assert lo <= len(steps) <= hi, item['solution']
    value = None
    for line in steps:
      found = _ANNOTATION.findall(line)
      assert len(found) == 1 and line.endswith('.'), line
      expr, value = found[0]
      assert re.fullmatch(r'[\d+\-*/()]+', expr), expr
      assert re.fullmatch(r'\d+', value), line
      assert abs(eval(expr) - int(value)) < 1e-9, line  # pylint: disable=eval-used
      assert re.search(r'(\S+) = \$?<<\1=(\d+)>>\2\b', line), line
      numbers = [int(x) for x in re.findall(r'\d+', expr + ' ' + item['question'])]
      if level in _BOUND:
        assert max(numbers + [int(value)]) < _BOUND[level], item
    assert value == item['answer']


def test_math_difficulty_increases():
  means = [statistics.mean(item['solution'].count('<<')
                           for item in math_problems.generate(level, 0, 300))
           for level in ('easy', 'medium', 'hard')]
  assert means[0] < means[1] < means[2], means
  hard = math_problems.generate('hard', 0, 300)
  assert any('%' in item['question'] for item in hard)
  assert any('/' in item['solution'] for item in hard)


def test_math_has_many_story_templates():
  skeletons = set()
  for level in math_problems.LEVELS:
    for item in math_problems.generate(level, 1, 300):
      first = item['solution'].split(' = ')[0].rsplit(' ', 1)[0]  # Prose before the expr.
      first = re.sub(r'\b[A-Z][a-z]+\b|\d+|(?:\w+ )+(?=cost$)', '', first)
      skeletons.add(' '.join(first.split()))
  assert len(skeletons) >= 12, skeletons


def test_math_unknown_level():
  with pytest.raises(ValueError, match=r"math level: unknown name 'xyz'; known: easy"):
    math_problems.generate('xyz', 0, 1)


# --------------------------------------------------------------------------- BBH checkers

_DYCK = ('Complete the rest of the sequence, making sure that the parentheses are closed'
         ' properly. Input: ')
_NAV = 'If you follow these instructions, do you return to the starting point? '
_NAV_END = '\nOptions:\n- Yes\n- No'
_SORT = 'Sort the following words alphabetically: List: '
_COUNTS = {'a': 1, 'an': 1, 'two': 2, 'three': 3, 'four': 4, 'five': 5}
_LEXICON = {
    'fruits': 'apple apples banana bananas blackberry blackberries grape grapes nectarine '
              'nectarines orange oranges peach peaches plum plums raspberry raspberries '
              'strawberry strawberries',
    'vegetables': 'cabbage cabbages carrot carrots cauliflower cauliflowers celery garlic '
                  'garlics broccoli lettuce onion onions potato potatoes yam yams',
    'musical instruments': 'accordion accordions clarinet clarinets drum drums flute flutes '
                           'piano pianos trombone trombones trumpet trumpets violin violins',
    'animals': 'bear bears cat cats chicken chickens cow cows dog dogs donkey donkeys duck '
               'ducks fish frog frogs goat goats mouse mice pig pigs rabbit rabbits snail '
               'snails snake snakes',
    'objects': 'bed beds car cars chair chairs couch couches fridge fridges lamp lamps '
               'microwave microwaves oven ovens stove stoves table tables toaster toasters',
}


def check_boolean_expressions(text):
  assert text.endswith(' is')
  expr = text[:-3]
  tokens = expr.split()
  assert set(tokens) <= {'True', 'False', 'not', 'and', 'or', '(', ')'} and len(tokens) == 8
  return str(eval(expr))  # pylint: disable=eval-used


def check_multistep_arithmetic_two(text):
  assert re.fullmatch(r'\(\((-?\d [-+*] ){3}-?\d\) [-+*] \((-?\d [-+*] ){3}-?\d\)\) =', text)
  return str(eval(text[:-2]))  # pylint: disable=eval-used


def check_word_sorting(text):
  assert text.startswith(_SORT)
  return ' '.join(sorted(text[len(_SORT):].split()))


def check_dyck_languages(text, target):
  """Returns the target if input+target is balanced and the target is minimal."""
  assert text.startswith(_DYCK)
  closer = {')': '(', ']': '[', '}': '{', '>': '<'}
  stack = []
  for token in text[len(_DYCK):].split():
    if token in closer:
      assert stack and stack.pop() == closer[token]
    else:
      stack.append(token)
  assert stack, 'nothing left to close'
  depth = len(stack)
  for token in target.split():
    assert token in closer and stack and stack.pop() == closer[token]
  assert not stack and len(target.split()) == depth
  return target


def check_navigate(text):
  assert text.startswith(_NAV) and text.endswith(_NAV_END)
  body = text[len(_NAV):-len(_NAV_END)]
  x = y = 0
  dx, dy = 0, 1
  for sentence in re.findall(r'[^.]+\.', body):
    sentence = sentence.strip()
    move = re.fullmatch(r'Take (\d+) steps?(?: (forward|backward|left|right))?\.', sentence)
    if sentence == 'Always face forward.':
      continue
    if sentence == 'Turn left.':
      dx, dy = -dy, dx
    elif sentence == 'Turn right.':
      dx, dy = dy, -dx
    elif sentence == 'Turn around.':
      dx, dy = -dx, -dy
    else:
      assert move, sentence
      n = int(move.group(1))
      assert 1 <= n <= 10 and (move.group(2) is not None) == body.startswith('Always')
      assert ('steps' in sentence) == (n > 1), sentence
      mx, my = {None: (dx, dy), 'forward': (0, 1), 'backward': (0, -1), 'left': (-1, 0),
                'right': (1, 0)}[move.group(2)]
      x, y = x + n * mx, y + n * my
  return 'Yes' if x == y == 0 else 'No'


def check_tracking_shuffled_objects(text):
  assert text.startswith('Alice, Bob, and Claire are ')
  verbs = r'(?:has an? |gets |is dancing with |is playing )'
  start = re.search(rf': Alice {verbs}(.+?), Bob {verbs}(.+?), and Claire {verbs}(.+?)\.\n',
                    text)
  swaps = re.findall(r'(First|Then|Finally), (\w+) and (\w+) (?:swap|switch|trade) ', text)
  who = re.search(r' At the end of the \w+, (\w+) (?:has|is)', text).group(1)
  options = re.findall(r'\n\(([ABC])\) (.+)', text)
  assert [w for w, _, _ in swaps] == ['First', 'Then', 'Finally']
  assert options == list(zip('ABC', start.groups()))
  holder = {'Alice': 'A', 'Bob': 'B', 'Claire': 'C'}
  for _, p, q in swaps:
    holder[p], holder[q] = holder[q], holder[p]
  return f'({holder[who]})'


def check_web_of_lies(text):
  sentences = re.fullmatch(r'Question: (.*) Does (\w+) tell the truth\?', text)
  parts = sentences.group(1).split('. ')
  first = re.fullmatch(r'(\w+) (tells the truth|lies)\.?', parts[0])
  honest = {first.group(1): first.group(2) == 'tells the truth'}
  for part in parts[1:]:
    said = re.fullmatch(r'(\w+) says (\w+) (tells the truth|lies)\.?', part)
    honest[said.group(1)] = honest[said.group(2)] == (said.group(3) == 'tells the truth')
  assert len(honest) == 5
  return 'Yes' if honest[sentences.group(2)] else 'No'


def check_object_counting(text):
  match = re.fullmatch(r'I have (.*)\. How many (.+) do I have\?', text)
  category = match.group(2)
  phrases = match.group(1).split(', ')
  assert len(phrases) >= 2 and phrases[-1].startswith('and ')
  total = 0
  for phrase in phrases[:-1] + [phrases[-1][4:]]:
    count, noun = phrase.split(' ', 1)
    if count in ('a', 'an'):
      assert (count == 'an') == (noun[0] in 'aeiou'), phrase
    head = noun.split()[0] if noun.split()[-1] in ('head', 'heads') else noun.split()[-1]
    owners = [c for c, forms in _LEXICON.items() if head in forms.split()]
    assert len(owners) == 1, phrase
    total += _COUNTS[count] if owners[0] == category else 0
  return str(total)


_CHECKERS = {
    'boolean_expressions': check_boolean_expressions,
    'dyck_languages': None,
    'multistep_arithmetic_two': check_multistep_arithmetic_two,
    'navigate': check_navigate,
    'object_counting': check_object_counting,
    'tracking_shuffled_objects': check_tracking_shuffled_objects,
    'web_of_lies': check_web_of_lies,
    'word_sorting': check_word_sorting,
}

# Verbatim examples from the BBH repo (bbh/<task>.json), used to validate the checkers.
_REAL = [
    ('boolean_expressions', 'not ( True ) and ( True ) is', 'False'),
    ('multistep_arithmetic_two', '((-9 * -5 - 6 + -2) - (-8 - -6 * -3 * 1)) =', '63'),
    ('word_sorting', _SORT + 'oven costume counterpart', 'costume counterpart oven'),
    ('dyck_languages', _DYCK + '< [ ] { < ( ) > } [ ] ( { }', ') >'),
    ('navigate', _NAV + 'Take 3 steps. Turn around. Take 5 steps. Turn right. Turn right. '
     'Take 1 step. Take 1 step.' + _NAV_END, 'Yes'),
    ('navigate', _NAV + 'Always face forward. Take 1 step right. Take 3 steps left. Take 2 '
     'steps right.' + _NAV_END, 'Yes'),
    ('object_counting', 'I have a yam, a cauliflower, a bed, two cabbages, a garlic, an oven, a '
     'carrot, a head of broccoli, a potato, a stalk of celery, a lettuce head, and a toaster. '
     'How many vegetables do I have?', '10'),
    ('web_of_lies', 'Question: Tamika lies. Raymond says Tamika tells the truth. Willian says '
     'Raymond tells the truth. Shaunda says Willian lies. Elanor says Shaunda tells the truth. '
     'Does Elanor tell the truth?', 'Yes'),
    ('tracking_shuffled_objects', 'Alice, Bob, and Claire are playing a game. At the start of '
     'the game, they are each holding a ball: Alice has a brown ball, Bob has a red ball, and '
     'Claire has a white ball.\nAs the game progresses, pairs of players trade balls. First, '
     'Claire and Bob swap balls. Then, Bob and Alice swap balls. Finally, Claire and Alice swap '
     'balls. At the end of the game, Bob has the\nOptions:\n(A) brown ball\n(B) red ball\n(C) '
     'white ball', '(A)'),
    ('tracking_shuffled_objects', 'Alice, Bob, and Claire are friends and avid readers who '
     'occasionally trade books. At the start of the semester, they each buy one new book: Alice '
     'gets Frankenstein, Bob gets Catch-22, and Claire gets Ulysses.\nAs the semester proceeds, '
     'they start trading around the new books. First, Bob and Alice swap books. Then, Alice and '
     'Claire swap books. Finally, Claire and Bob swap books. At the end of the semester, Alice '
     'has\nOptions:\n(A) Frankenstein\n(B) Catch-22\n(C) Ulysses', '(C)'),
]


def _check(task, text, target):
  if task == 'dyck_languages':
    return check_dyck_languages(text, target)
  return _CHECKERS[task](text)


@pytest.mark.parametrize('task,text,target', _REAL)
def test_checkers_agree_with_real_bbh(task, text, target):
  assert _check(task, text, target) == target


# ----------------------------------------------------------------------------- BBH tasks


def test_bbh_lists_required_tasks():
  assert set(_CHECKERS) <= set(bbh_tasks.TASKS)


@pytest.mark.parametrize('task', tuple(_CHECKERS))  # newer tasks: tests/test_bbh_more.py
def test_bbh_is_deterministic_with_prefix_property(task):
  items = bbh_tasks.generate(task, 5, 40)
  assert items == bbh_tasks.generate(task, 5, 40)
  assert items[:13] == bbh_tasks.generate(task, 5, 13)
  assert items != bbh_tasks.generate(task, 6, 40)
  assert all(set(item) == {'input', 'target'} for item in items)
  assert len({item['input'] for item in items}) >= 35


@pytest.mark.parametrize('task', tuple(_CHECKERS))  # newer tasks: tests/test_bbh_more.py
def test_bbh_targets_are_correct(task):
  for item in bbh_tasks.generate(task, 11, 300):
    assert _check(task, item['input'], item['target']) == item['target'], item


@pytest.mark.parametrize('task,values', [('navigate', ('Yes', 'No')),
                                         ('web_of_lies', ('Yes', 'No')),
                                         ('boolean_expressions', ('True', 'False'))])
def test_bbh_binary_targets_are_balanced(task, values):
  targets = [item['target'] for item in bbh_tasks.generate(task, 2, 400)]
  assert set(targets) == set(values)
  assert 0.35 <= targets.count(values[0]) / len(targets) <= 0.65


def test_bbh_covers_variants():
  navigate = [item['input'] for item in bbh_tasks.generate('navigate', 0, 100)]
  assert any('Always face forward.' in text for text in navigate)
  assert any('Turn around.' in text for text in navigate)
  shuffles = {item['input'].split(' are ')[1][:20]
              for item in bbh_tasks.generate('tracking_shuffled_objects', 0, 100)}
  assert len(shuffles) == 5, shuffles
  counting = bbh_tasks.generate('object_counting', 0, 200)
  assert len({re.search(r'many (.+) do', item['input']).group(1) for item in counting}) == 5
  assert any(' two ' in item['input'] or ' three ' in item['input'] for item in counting)


def test_bbh_unknown_task():
  with pytest.raises(ValueError, match=r"bbh task: unknown name 'xyz'; known: .*navigate"):
    bbh_tasks.generate('xyz', 0, 1)
