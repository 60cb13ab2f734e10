{#-
    Spark: the history of a versioned source table, kept incrementally as an append-only log.

    The lake holds a complete snapshot of the table per load. The log has one row per change
    a snapshot shows against the snapshot before it: a record that is new, changed (another
    `record_hash`) or back after a deletion starts a version (its columns, `is_deleted` false);
    a record that is gone is a deletion (its key, `is_deleted` true, other columns null). Each
    row's `valid_from` is the `_snapshot_at` of the snapshot that showed the change.

    A build reads only the snapshots newer than the log's last change, and compares the first
    of them with the log's latest row per key: the cost is the new snapshots plus the log, not
    every snapshot in the lake. A snapshot that changed nothing adds nothing (and is read again
    by the next build, which finds nothing again). The first build, or a full refresh, reads
    every snapshot and gives the same log. Versions and their validity: source_versions.sql.
-#}
{% macro version_changelog(table, key) -%}
    {%- set relation = source('moovitamix', table) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) if execute else [] -%}
    with

    new_rows as (
        {{ rows_after_log(relation, 'valid_from') }}
    ),

    snapshots as (
        select
            _snapshot_at,
            _dlt_load_id,
            dense_rank() over (order by _snapshot_at) as snapshot_number
        from (select distinct _snapshot_at, _dlt_load_id from new_rows) as snapshot_loads
    ),

    last_snapshot as (
        select max(snapshot_number) as snapshot_number from snapshots
    ),

    {% if is_incremental() -%}
    log_state as (
        -- each key's latest row in the log: its current hash, or a deletion
        select
            {{ key }},
            record_hash,
            is_deleted
        from (
            select
                {{ key }},
                record_hash,
                is_deleted,
                row_number() over (partition by {{ key }} order by valid_from desc) as latest
            from {{ this }}
        ) as ordered_log
        where latest = 1
    ),
    {%- else -%}
    log_state as (
        select
            cast(null as bigint) as {{ key }},
            cast(null as string) as record_hash,
            cast(null as boolean) as is_deleted
        from (select 1 as one) as nothing
        where nothing.one = 0
    ),
    {%- endif %}

    numbered as (
        select
            new_rows.*,
            snapshots.snapshot_number,
            lag(snapshots.snapshot_number) over by_key as previous_number,
            lag(new_rows.record_hash) over by_key as previous_hash,
            lead(snapshots.snapshot_number) over by_key as next_number
        from new_rows
        inner join snapshots
            on new_rows._snapshot_at = snapshots._snapshot_at
        window by_key as (partition by new_rows.{{ key }} order by snapshots.snapshot_number)
    ),

    starts as (
        select numbered.*
        from numbered
        left join log_state
            on numbered.{{ key }} = log_state.{{ key }}
        where
            case
                when numbered.previous_number is null
                    then
                        log_state.record_hash is null
                        or log_state.is_deleted
                        or log_state.record_hash != numbered.record_hash
                        or numbered.snapshot_number > 1
                else
                    numbered.previous_number != numbered.snapshot_number - 1
                    or numbered.previous_hash != numbered.record_hash
            end
    ),

    deletions as (
        -- gone after a snapshot that had it
        select
            numbered.{{ key }},
            numbered.snapshot_number + 1 as snapshot_number
        from numbered
        cross join last_snapshot
        where
            numbered.snapshot_number < last_snapshot.snapshot_number
            and coalesce(numbered.next_number, 0) != numbered.snapshot_number + 1
        union all
        -- current in the log, missing from the first new snapshot
        select
            log_state.{{ key }},
            1 as snapshot_number
        from log_state
        cross join last_snapshot
        left join (
            select
                {{ key }},
                min(snapshot_number) as first_number
            from numbered
            group by {{ key }}
        ) as firsts
            on log_state.{{ key }} = firsts.{{ key }}
        where
            not log_state.is_deleted
            and coalesce(firsts.first_number, 2) > 1
            and last_snapshot.snapshot_number is not null
    )

    select
        {%- for column in columns %}
            starts.{{ column.name }},
        {%- endfor %}
        starts._snapshot_at as valid_from,
        false as is_deleted
    from starts
    union all
    select
        {%- for column in columns %}
            {%- if column.name == key %}
                deletions.{{ key }},
            {%- elif column.name == '_snapshot_at' %}
                snapshots._snapshot_at,
            {%- elif column.name == '_dlt_load_id' %}
                snapshots._dlt_load_id,
            {%- else %}
                cast(null as {{ column.data_type }}) as {{ column.name }},
            {%- endif %}
        {%- endfor %}
        snapshots._snapshot_at as valid_from,
        true as is_deleted
    from deletions
    inner join snapshots
        on deletions.snapshot_number = snapshots.snapshot_number
{%- endmacro %}

{#-
    Spark: the list items of the listen history versions, kept incrementally: the items of each
    (user, record_hash) once, with the load that first served them. A build reads only the
    snapshots newer than the last it added from, and adds the lists it has not seen.
-#}
{% macro list_items_changelog(table) -%}
    with

    new_items as (
        {{ rows_after_log(source('moovitamix', table), '_snapshot_at') }}
    )

    select
        new_items.record_hash,
        new_items.user_id,
        new_items.position,
        new_items.track_id,
        min_by(new_items._dlt_load_id, new_items._snapshot_at) as _dlt_load_id,
        min(new_items._snapshot_at) as _snapshot_at
    from new_items
    {%- if is_incremental() %}
        left anti join (select distinct user_id, record_hash from {{ this }}) as seen
            on
                new_items.user_id = seen.user_id
                and new_items.record_hash = seen.record_hash
    {%- endif %}
    group by new_items.record_hash, new_items.user_id, new_items.position, new_items.track_id
{%- endmacro %}

{#-
    The rows of completed loads in `relation` whose snapshot is newer than the log's last one
    (the max of `log_column` in the model being built); all of them on a first build.
-#}
{% macro rows_after_log(relation, log_column) -%}
    {%- set watermark = none -%}
    {%- if is_incremental() and execute -%}
        {%- set watermark = run_query(
            'select cast(max(' ~ log_column ~ ') as string) from ' ~ this
        ).columns[0].values()[0] -%}
    {%- endif -%}
    select * from {{ relation }}
    where
        _dlt_load_id in ({{ completed_load_ids() }})
        {%- if watermark %}
            and _snapshot_at > timestamp '{{ watermark }}'
        {%- endif %}
{%- endmacro %}
