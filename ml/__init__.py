"""The recommender: implicit ALS on marts.fct_listens, judged against popularity baselines,
published to schema recommendations (`python -m ml train|evaluate`, ml/README.md). OpenBLAS must
run single-threaded under implicit, and the variable only works before numpy loads: so it is set
on import (`ml.model.single_threaded_blas()` covers processes that loaded numpy earlier)."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
