-- Each run's figures, the next run's baselines (expectations/run_metrics.py).
create table if not exists monitoring.run_metrics (
    run_id text not null,
    metric text not null,       -- 'rows' (subject: a table), 'genre_share' (subject: a genre)
    subject text not null,
    value double precision not null,
    measured_at timestamptz not null default now(),
    primary key (run_id, metric, subject)
);
comment on table monitoring.run_metrics is
    'Figures measured by each validation run (row counts, genre shares): the baselines of the '
    'day-over-day checks of the next run.';
