"""The recommender trained in Spark with MLlib's implicit ALS, for listen matrices that outgrow
the driver (the Spark engine above `[spark] mllib_above_pairs`): the driver path's rules as
DataFrames. ml/README.md, "On Spark (MLlib)", says when it is used and what differs.
"""
