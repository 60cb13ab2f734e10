"""Recommendation uptake, from the serving work's dbt mart marts.fct_recommendation_uptake: of
the tracks users heard for the first time, the share that was in their published top-k list, in
the lists the API served them, and in a popular-tracks list of the same k (the baseline).
Uptake is sum(hits) / sum(new_tracks), per day and per model run."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from expectations.report.plots import figure_with_axes, time_ticks

MART = "marts.fct_recommendation_uptake"
NOTE = f"No recommendation uptake to show: {MART} does not exist yet or has no rows since then."
LISTS = {"published": "published lists", "served": "served lists", "baseline": "popular tracks"}
# the mart's rows summed per day and model run (the run whose lists were published the day before)
QUERY = f"""
    select listen_date, model_run_id, sum(new_tracks)::bigint as new_tracks,
           sum(hits_published)::bigint as published, sum(hits_served)::bigint as served,
           sum(baseline_hits)::bigint as baseline
    from {MART}
    where listen_date >= %(since)s::date
    group by listen_date, model_run_id
    order by listen_date, model_run_id
"""


def _shares(sums: pd.DataFrame) -> pd.DataFrame:
    """Each list's hits as a share of the new tracks (the mart's rows have at least one)."""
    return sums[list(LISTS)].div(sums["new_tracks"], axis=0)


def per_day(uptake: pd.DataFrame) -> Figure:
    days = uptake.groupby("listen_date").sum(numeric_only=True)
    figure, (axes,) = figure_with_axes("Recommendation uptake per day")
    for column, share in _shares(days).items():
        axes.plot(range(len(days)), share, marker="o", label=LISTS[str(column)])
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(bottom=0)
    axes.set_ylabel("share of new tracks heard")
    time_ticks(axes, pd.to_datetime(days.index), "%Y-%m-%d")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def per_model_run(uptake: pd.DataFrame) -> pd.DataFrame:
    """One row per model run: its first and last day, new tracks, and each list's uptake."""
    runs = uptake.groupby("model_run_id", as_index=False).agg(
        first_day=("listen_date", "min"),
        last_day=("listen_date", "max"),
        new_tracks=("new_tracks", "sum"),
        **{column: (column, "sum") for column in LISTS},
    )
    runs[list(LISTS)] = _shares(runs).map("{:.2%}".format)
    return runs
