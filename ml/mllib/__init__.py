"""The recommender trained in Spark with MLlib's implicit ALS, for listen matrices that outgrow
the driver (the Spark engine, above `[spark] mllib_above_pairs` pairs: ml/config.toml).

The same holdout rule, metrics, baselines, challengers, selection and lists as the driver path
(ml/train.py), each step as Spark DataFrames: data (the marts), split (the holdout), als (the
fit, the parameter mapping, top-k lists), popularity (the baselines), metrics, lists (the
published lists, the lake, batches for Postgres), run (`run_mllib`: one run end to end).
ml/README.md, "On Spark (MLlib)", says when it is used and what differs.
"""
