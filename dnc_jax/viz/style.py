"""The one matplotlib set-up: a file backend (no screen needed) and the house style."""
from __future__ import annotations

RC = {"font.size": 10, "axes.titlesize": 10, "legend.fontsize": 8, "figure.dpi": 150,
      "savefig.bbox": "tight"}


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend with :data:`RC` applied (imported on first use)."""
  import matplotlib
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt
  plt.rcParams.update(RC)
  return plt
