"""matplotlib set-up shared by every figure: headless, and written atomically as PNG and SVG."""

import os


def plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # headless, and the same pixels everywhere
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig, out_prefix: str) -> list[str]:
  """PNG + SVG, each written to .tmp then renamed so a reader never sees half a file."""
  for ext in ('png', 'svg'):  # bbox_inches='tight' keeps the legends outside the axes in the file
    fig.savefig(f'{out_prefix}.{ext}.tmp', format=ext, dpi=110, bbox_inches='tight')
    os.replace(f'{out_prefix}.{ext}.tmp', f'{out_prefix}.{ext}')
  plt().close(fig)
  return [f'{out_prefix}.png', f'{out_prefix}.svg']
