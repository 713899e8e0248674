"""The commands ``bin/deep_rfm``, ``bin/train_nn``, ``bin/theory`` and ``bin/figures``."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Appends "(default: X)" only where it informs.

  Not for flags (default False), for ``None`` defaults (the help says what
  happens), nor when the help text already names its default.
  """

  def _get_help_string(self, action):
    text = action.help or ""
    default = action.default
    if (default is None or default is False or default is argparse.SUPPRESS
        or "%(default)" in text or "default" in text.lower()
        or action.option_strings == []):
      return text
    return text + " (default: %(default)s)"
