-- ml.model_runs (ml/registry.py): one row per model trained by `make train`; idempotent.
create table if not exists ml.model_runs (
    model_run_id text primary key,
    run_id text not null,
    trained_at timestamptz not null,
    params jsonb not null,
    metrics jsonb not null,
    baseline_metrics jsonb not null,
    n_users integer not null,
    n_tracks integer not null,
    n_interactions bigint not null,
    status text not null check (status in ('champion', 'challenger', 'rejected')),
    artifact_path text
);
create index if not exists model_runs_status_trained_at_idx
on ml.model_runs (status, trained_at desc);
comment on table ml.model_runs is
'One row per model trained by ml/ (make train): params, holdout metrics, baseline '
'metrics on the same holdout, data sizes, status (champion serves from that run on; '
'challenger beat the baselines but was not chosen; rejected did not, or failed).';
