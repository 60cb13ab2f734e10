"""The recommender: implicit ALS on marts.fct_listens, judged against popularity baselines,
published to schema recommendations. `python -m ml train|evaluate`; see ml/README.md.

OpenBLAS must run single-threaded under implicit (its own OpenMP threads do the work); the
variable only takes effect before numpy loads, so it is set here, on the package's import.
Processes that loaded numpy earlier are covered by `ml.model.single_threaded_blas()`.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
