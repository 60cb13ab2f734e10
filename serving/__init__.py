"""The recommendations API: the published lists, play-next, fold-in of fresh listens, health
and Prometheus metrics, as role mvx_app. `python -m serving --port 8081`; see serving/README.md.
"""
