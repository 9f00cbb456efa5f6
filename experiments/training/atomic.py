"""Files written whole or not at all: a reader, or a run killed mid-write, never sees half a result."""

import json
import os


def replace(path: str, save) -> str:
  """save(tmp) writes a file beside `path`, which then takes its place in one rename."""
  tmp = path + '.tmp' + os.path.splitext(path)[1]  # np.savez would append .npz to other names
  save(tmp)
  os.replace(tmp, path)
  return path


def write_text(path: str, text: str) -> str:
  def save(tmp):
    with open(tmp, 'w', newline='') as f:
      f.write(text)
  return replace(path, save)


def write_json(path: str, obj, **dump_kwargs) -> str:
  return write_text(path, json.dumps(obj, indent=1, **dump_kwargs))


def read_json(path: str):
  """The JSON at path, or None if it is missing or does not parse (e.g. not written yet)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None
