"""Mixers by name: `--config.mixer.name=NAME` picks one; its own fields live beside `name`."""

import ml_collections

from mixing import mixer as mixer_lib

NAMES = ('static',)


def make_mixer(config: ml_collections.ConfigDict, weights) -> mixer_lib.Mixer:
  """The Mixer `config.name` names; `weights` are the config's domain weights (static mixing)."""
  if config.name == 'static':
    return mixer_lib.Static(weights)
  raise ValueError(f'mixer.name: unknown mixer {config.name!r} (known: {", ".join(NAMES)})')
