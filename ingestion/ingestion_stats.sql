-- monitoring.ingestion_stats (ingestion/stats.py): one row per endpoint per run; idempotent.
create table if not exists monitoring.ingestion_stats (
    run_id text not null,
    endpoint text not null,
    status text not null,             -- loaded | failed (at fault) | discarded (run failed)
    load_id text,                     -- dlt load id of the endpoint's package (null if not loaded)
    api_total bigint,                 -- the API's reported total (first page)
    pages integer not null,           -- pages of the accepted read
    records bigint not null,          -- records received in the accepted read (incl. rejected)
    rejected bigint not null,
    rejected_by_reason jsonb not null,
    requests integer not null,        -- every HTTP request, retries and re-reads included
    retries jsonb not null,           -- by cause: timeout, connection, http_429, http_5xx, ...
    http_errors jsonb not null,       -- by status: {"503": 2}
    bytes bigint not null,
    rereads integer not null,         -- reads repeated after a mismatch
    new_fields jsonb not null,        -- schema drift: {"field": "column"}
    versions_added bigint,            -- rows this run added to raw.<endpoint>
    versions_retired bigint,          -- versions this run closed (absent from the extract)
    items_added bigint,               -- rows added to raw.listen_history__items
    carried_forward bigint not null,  -- current versions kept for rejected ids
    seconds double precision not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    error text,
    suppressed bigint not null default 0,  -- records of erased users dropped on purpose
    primary key (run_id, endpoint)
)
