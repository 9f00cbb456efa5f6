"""Model presets for config files: `models.get_config('tiny' | 'tiny_gqa' | 'quickstart' | 'm13')`.

The section's fields and how a preset and per-field overrides combine: models/presets.py.
"""

from models.presets import get_config  # pylint: disable=unused-import
