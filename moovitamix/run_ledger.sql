-- The run ledger's tables (moovitamix/run_ledger.py), created if missing; idempotent.
create schema if not exists monitoring;
create table if not exists monitoring.pipeline_runs (
    run_id text primary key,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    status text not null check (status in ('running', 'success', 'failed')),
    failed_step text,
    error_message text,
    seconds double precision,
    source text,
    warehouse text,
    hostname text,
    pid integer
);
create table if not exists monitoring.pipeline_run_steps (
    run_id text not null references monitoring.pipeline_runs (run_id),
    step text not null,
    step_order integer not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    status text not null check (status in ('running', 'success', 'failed')),
    seconds double precision,
    rows_in bigint,
    rows_out bigint,
    details jsonb not null default '{}'::jsonb,
    error_message text,
    primary key (run_id, step)
);
comment on table monitoring.pipeline_runs is
    'One row per pipeline run (make daily), written as it runs; killed runs show as failed.';
comment on table monitoring.pipeline_run_steps is
    'One row per step of a pipeline run: status, seconds, rows in and out, step details.';
