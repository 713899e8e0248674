"""Writes the Fashion-MNIST test fixture in tests/data/fashion_mnist/.

The fixture is the first 2000 training and the first 500 test images and
labels of Fashion-MNIST, in the original IDX format (gzipped, standard file
names), so that tests needing real images run anywhere without a download:

  load_dataset("fashion_mnist", n=2000, n_test=500, data_dir="tests/data/fashion_mnist")

Source: the Debian package dataset-fashion-mnist (the files of
https://github.com/zalandoresearch/fashion-mnist). Run from the repository root:

  python tests/data/make_fashion_mnist_fixture.py [--source DIR]

The output is byte-for-byte reproducible (the gzip headers carry no time stamp).
"""

import argparse
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from dnc_jax.data import DEBIAN_FASHION_MNIST_DIR, read_idx, write_idx  # noqa: E402

N_TRAIN = 2000
N_TEST = 500

LICENSE = """\
Fashion-MNIST subset: the first 2000 training and the first 500 test images
and labels of Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist),
unchanged, in the original IDX format. Written by make_fashion_mnist_fixture.py
from the Debian package dataset-fashion-mnist.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=DEBIAN_FASHION_MNIST_DIR,
                      help="folder with the four Fashion-MNIST IDX .gz files")
  parser.add_argument("--out", default=str(HERE / "fashion_mnist"), help="output folder")
  args = parser.parse_args(argv)
  src, out = pathlib.Path(args.source), pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  for prefix, count in (("train", N_TRAIN), ("t10k", N_TEST)):
    for kind, magic in (("images-idx3", 2051), ("labels-idx1", 2049)):
      name = f"{prefix}-{kind}-ubyte.gz"
      array = read_idx(src / name, expected_magic=magic)[:count]
      write_idx(out / name, array)
      print(f"wrote {out / name}: {array.shape} {array.dtype}")
  (out / "LICENSE").write_text(LICENSE)
  print(f"wrote {out / 'LICENSE'}")


if __name__ == "__main__":
  main()
