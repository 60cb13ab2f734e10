"""The MooVitamix API simulator: a separate program that stands in for the production API.

Run it with `python -m simulator`; the pipeline only ever speaks HTTP to it. See README.md.
"""
