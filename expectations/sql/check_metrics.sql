-- Each monitoring check's metric per subject per run (expectations/results.py).
create table if not exists monitoring.check_metrics (
    run_id text not null,
    suite text not null,
    expectation text not null,
    subject text,                    -- null when the check could not run
    observed double precision,       -- null: nothing to compare (no baseline yet)
    could_not_run text,              -- why the check's query raised
    details jsonb not null default '{}'::jsonb,  -- the metric query's context columns
    measured_at timestamptz not null default now()
);
create index if not exists check_metrics_run_idx on monitoring.check_metrics (run_id, suite);
comment on table monitoring.check_metrics is
    'Each monitoring check''s metric per subject per run: what Great Expectations validates.';
