"""Writes digits.bin from scikit-learn's bundled copy of the UCI digits.

Run with any Python that has scikit-learn installed:

    python data/make_digits.py

Each of the 1,797 records is 65 bytes: the 64 pixel values (0..16) of the
8x8 image in row-major order, then the label (0..9).
"""

import gzip
import pathlib

import sklearn

source = pathlib.Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
rows = gzip.decompress(source.read_bytes()).decode().split()
records = bytearray()
for row in rows:
    values = [int(float(v)) for v in row.split(",")]
    assert len(values) == 65 and all(0 <= v <= 16 for v in values[:64]) and values[64] < 10
    records.extend(values)
assert len(rows) == 1797
target = pathlib.Path(__file__).parent / "digits.bin"
target.write_bytes(bytes(records))
print(f"{target}: {len(rows)} images from scikit-learn {sklearn.__version__}")
