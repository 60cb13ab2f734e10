"""The recommender (ml/README.md). OpenBLAS must run single-threaded under implicit, and the
variable only works before numpy loads: so it is set on import."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
