-- One row per expectation per run (expectations/results.py).
create table if not exists monitoring.validation_results (
    run_id text not null,
    suite text not null,
    expectation text not null,       -- the check's name (thresholds.toml without its layer)
    severity text not null check (severity in ('error', 'warning')),
    success boolean not null,
    observed_value text,             -- for people: '2.10% (users); 0.00% (tracks)'
    threshold text,                  -- '<= 1.00%'
    expectation_type text not null,  -- the GX expectation
    description text,
    observed jsonb not null default '{}'::jsonb,  -- for machines: the metric rows, counts
    validated_at timestamptz not null,
    primary key (run_id, suite, expectation, severity)
);
create index if not exists validation_results_validated_at_idx
    on monitoring.validation_results (validated_at);
comment on table monitoring.validation_results is
    'One row per Great Expectations expectation per run: severity (error fails the run, warning '
    'alerts), success, observed value and threshold.';
