"""Near-duplicates of every BBH task, for large task pools: the same items, phrased otherwise.

  rephrase/bbh/<task>   each input reworded (`REPHRASINGS`, possibly nothing) under REPHRASE_PROMPT
  variant<k>/bbh/<task> the input as is, under prompt template VARIANT_PROMPTS[k - 1] (k = 1..4)
Both draw the items of `bbh/<task>` from the same seeds, so their targets are the same.
"""

import re

from mixing.data.builtin import bbh_tasks

REPHRASE_PROMPT = 'Input: {input}\nOutput:'
VARIANT_PROMPTS = ('Task: {input}\nAnswer:', 'Problem: {input}\nSolution:',
                   'Instruction: {input}\nResponse:', '{input}\nThe answer is')
PATTERN = f'rephrase/bbh/<task>, variant1..{len(VARIANT_PROMPTS)}/bbh/<task>'  # for messages
_CHOICES = ('\nOptions:\n', '\nChoices:\n')
REPHRASINGS = {  # task: (old, new) replacements, applied in order
    'boolean_expressions': [(' is', ' evaluates to')],
    'navigate': [('If you follow these instructions, do you return to the starting point?',
                  'After these moves, are you back where you started?')],
    'web_of_lies': [('Question: ', 'Puzzle: '), ('Does', 'Is it true that'),
                    ('tell the truth?', 'tells the truth?')],
    'word_sorting': [('Sort the following words alphabetically: List:',
                      'Put these words in alphabetical order:')],
    'object_counting': [('How many', 'Count how many')],
    'dyck_languages': [('Complete the rest of the sequence, making sure that the parentheses are '
                        'closed properly. Input:', 'Close every open bracket of this sequence:')],
    'multistep_arithmetic_two': [(' =', ' equals')],
    'tracking_shuffled_objects': [_CHOICES],
    'date_understanding': [('What is the date', 'Which date is'), _CHOICES],
    'formal_fallacies': [('Is the argument, given the explicitly stated premises, deductively '
                          'valid or invalid?', 'Given only its premises, is this argument valid?')],
    'geometric_shapes': [('This SVG path element', 'The SVG path'), (' draws a\n', ' shows a\n'),
                         _CHOICES],
    'hyperbaton': [('Which sentence has the correct adjective order:',
                    'Which phrase orders its adjectives correctly?'), _CHOICES],
    'logical_deduction_three_objects': [
        ('The following paragraphs each describe a set of three objects arranged in a fixed order. '
         'The statements are logically consistent within each paragraph. ', ''), _CHOICES],
    'penguins_in_a_table': [('Here is a table where the first line is a header and each subsequent '
                             'line is a penguin:', 'A table of penguins, header first:'), _CHOICES],
    'reasoning_about_colored_objects': [_CHOICES],
    'sports_understanding': [('Is the following sentence plausible?',
                              'Could this sentence be true?')],
    'temporal_sequences': [(' Between what times could they have gone?', ''), _CHOICES],
}


def reword(task: str, text: str) -> str:
  """The input of a rephrase/bbh/<task> item."""
  for old, new in REPHRASINGS.get(task, ()):
    text = text.replace(old, new)
  return text


def names() -> list[str]:
  """Every rephrase and variant domain name, tasks in `bbh_tasks.TASKS` order."""
  return ([f'rephrase/bbh/{task}' for task in bbh_tasks.TASKS] +
          [f'variant{k}/bbh/{task}' for k in range(1, len(VARIANT_PROMPTS) + 1)
           for task in bbh_tasks.TASKS])


def parse(name: str) -> tuple[str, str, bool] | None:
  """(task, prompt template, reworded) for a rephrase or variant name; None for any other name."""
  found = re.fullmatch(r'(rephrase|variant([1-9]))/bbh/(\w+)', name)
  if not found or found.group(3) not in bbh_tasks.TASKS:
    return None
  if found.group(1) == 'rephrase':
    return found.group(3), REPHRASE_PROMPT, True
  k = int(found.group(2))
  return (found.group(3), VARIANT_PROMPTS[k - 1], False) if k <= len(VARIANT_PROMPTS) else None
