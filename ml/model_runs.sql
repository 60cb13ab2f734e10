-- ml.model_runs (ml/registry.py): one row per model trained by `make train`; idempotent.
create table if not exists ml.model_runs (
    model_run_id text primary key,
    run_id text not null,
    trained_at timestamptz not null,
    family text not null,
    split text not null,
    params jsonb not null,
    metrics jsonb not null,
    baseline_metrics jsonb not null,
    n_users integer not null,
    n_tracks integer not null,
    n_interactions bigint not null,
    status text not null check (status in ('champion', 'challenger', 'rejected')),
    artifact_path text
);
-- warehouses made before there were families: the family from params, the split it then was
alter table ml.model_runs add column if not exists family text;
alter table ml.model_runs add column if not exists split text;
update ml.model_runs
set
    family = coalesce(family, params ->> 'family', params ->> 'model', 'als'),
    split = coalesce(split, 'holdout')
where family is null or split is null;
alter table ml.model_runs alter column family set not null;
alter table ml.model_runs alter column split set not null;
create index if not exists model_runs_status_trained_at_idx
on ml.model_runs (status, trained_at desc);
comment on table ml.model_runs is
'One row per model trained by ml/ (make train): family, params, the split it was judged '
'on (time or holdout), validation metrics with the intervals of its gains, the test '
'report of the serving model, baseline metrics, data sizes, status (champion serves from '
'that run on; challenger beat the best baseline but was not chosen; rejected did not, '
'or failed).';
