"""Imbalanced training subsets in SVHN's class proportions (the paper's Fig. 5B case)."""
import numpy as np
import pytest

from dnc_jax import data as data_lib
from dnc_jax.errors import ConfigError, DataError

# SVHN's published training counts of the digits 0..9 (73,257 images).
SVHN = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)


def test_svhn_counts_for_2000_by_hand():
  # 2000 * SVHN / 73257 = 135.09, 378.43, 288.98, 231.98, 203.61, 187.89, 156.35, 152.75,
  # 137.73, 127.20: floors sum to 1994, and the six largest remainders (.98, .98, .89,
  # .75, .73, .61: classes 2, 3, 5, 7, 8, 4) get one more point each.
  expected = [135, 378, 289, 232, 204, 188, 156, 153, 138, 127]
  assert data_lib.class_counts_for(2000, "svhn").tolist() == expected
  assert data_lib.class_counts_for(2000, SVHN).tolist() == expected
  assert sum(SVHN) == 73257 and data_lib.SVHN_TRAIN_COUNTS == SVHN
  # 18.9 % ones, 6.4 % nines
  assert abs(SVHN[1] / sum(SVHN) - 0.189) < 0.001 and abs(SVHN[9] / sum(SVHN) - 0.0636) < 0.001


def test_load_dataset_with_svhn_proportions():
  ds = data_lib.load_dataset("mnist5k", n=1000, n_test=50, class_proportions="svhn")
  counts = np.bincount(ds.y_train, minlength=10)
  assert counts.tolist() == ds.info["counts_train"] == [68, 189, 144, 116, 102, 94, 78, 76, 69, 64]
  assert np.all(np.diff(ds.y_train) >= 0)                     # grouped by class
  assert ds.info["options"]["class_proportions"] == "svhn"
  assert np.allclose(ds.info["class_proportions"], np.asarray(SVHN) / sum(SVHN))
  assert ds.y_test.shape == (50,)                             # the test split is unchanged
  again = data_lib.load_dataset("mnist5k", n=1000, n_test=50, class_proportions="svhn")
  np.testing.assert_array_equal(ds.x_train, again.x_train)    # deterministic
  # The first rows of each class in the source order are kept: rebuild the subset from
  # the raw pixels and standardise it in float64 NumPy.
  raw = data_lib.load_raw("mnist5k")
  y = np.asarray(raw.y_train)
  pick = np.concatenate([np.flatnonzero(y == c)[:counts[c]] for c in range(10)])
  x = np.asarray(raw.x_train)[pick].reshape(len(pick), -1).astype(np.float64)
  sd = x.std(0)
  ref = np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)
  np.testing.assert_allclose(ds.x_train, ref, atol=1e-5)


def test_class_proportions_errors():
  with pytest.raises(ConfigError, match="balanced"):
    data_lib.load_dataset("mnist5k", n=100, class_proportions="svhn", balanced=True)
  with pytest.raises(ConfigError, match="entries"):
    data_lib.load_dataset("mnist5k", n=100, class_proportions="1,2,3")
  with pytest.raises(ConfigError, match="> 0"):
    data_lib.load_dataset("mnist5k", n=100, class_proportions=[1] * 9 + [0])
  with pytest.raises(DataError, match="use n <= 2114"):
    data_lib.load_dataset("mnist5k", n=3000, class_proportions="svhn")
