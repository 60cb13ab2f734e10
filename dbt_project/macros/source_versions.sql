{#-
    The rows of a versioned source table (tracks, users, listen_history) of completed loads, as
    dlt's SCD2 keeps them on Postgres: one row per version of a record, with `_dlt_valid_from`,
    `_dlt_valid_to` (null while current) and `_dlt_load_id` (the load that first wrote it).

    Postgres: dlt maintains the history in raw; this only keeps completed loads.

    Spark: the lake holds a complete snapshot of the table per load (`_snapshot_at`, the run's
    boundary), and the history is derived from them. A version is a maximal run of consecutive
    snapshots in which the record (`key`) has the same `record_hash`; it is valid from the
    first snapshot of the run to the next snapshot after it (where the record is absent, i.e.
    deleted, or has another hash), null if the run reaches the latest snapshot. Its columns are
    those of its first snapshot. Consecutive means among the snapshots of completed loads that
    hold rows of this table.
-#}
{% macro source_versions(table, key) -%}
    {{ return(adapter.dispatch('source_versions', 'moovitamix')(table, key)) }}
{%- endmacro %}

{% macro default__source_versions(table, key) -%}
    select * from {{ source('moovitamix', table) }}
    where _dlt_load_id in ({{ completed_load_ids() }})
{%- endmacro %}

{% macro spark__source_versions(table, key) -%}
    with

    snapshot_rows as (
        select * from {{ source('moovitamix', table) }}
        where _dlt_load_id in ({{ completed_load_ids() }})
    ),

    snapshots as (
        select
            _snapshot_at,
            dense_rank() over (order by _snapshot_at) as snapshot_number
        from (select distinct _snapshot_at from snapshot_rows) as snapshot_times
    ),

    numbered_rows as (
        -- rows of one version share (key, record_hash, island): their snapshot numbers are
        -- consecutive, so the number minus its rank among the key's rows of that hash is constant
        select
            snapshot_rows.*,
            snapshots.snapshot_number,
            snapshots.snapshot_number - dense_rank() over (
                partition by snapshot_rows.{{ key }}, snapshot_rows.record_hash
                order by snapshots.snapshot_number
            ) as island
        from snapshot_rows
        inner join snapshots
            on snapshot_rows._snapshot_at = snapshots._snapshot_at
    ),

    versions as (
        select
            numbered_rows.*,
            row_number() over (
                partition by numbered_rows.{{ key }}, numbered_rows.record_hash, numbered_rows.island
                order by numbered_rows.snapshot_number
            ) as row_of_version,
            max(numbered_rows.snapshot_number) over (
                partition by numbered_rows.{{ key }}, numbered_rows.record_hash, numbered_rows.island
            ) as last_snapshot_number
        from numbered_rows
    )

    select
        versions.*,
        versions._snapshot_at as _dlt_valid_from,
        next_snapshots._snapshot_at as _dlt_valid_to
    from versions
    left join snapshots as next_snapshots
        on versions.last_snapshot_number + 1 = next_snapshots.snapshot_number
    where versions.row_of_version = 1
{%- endmacro %}

{#-
    The elements of the listen history versions' lists, of completed loads. Postgres: raw holds
    them once per version. Spark: every snapshot holds those of every current version, so the
    distinct (user_id, record_hash, position, track_id), with the load that first wrote them.
-#}
{% macro source_list_items(table) -%}
    {{ return(adapter.dispatch('source_list_items', 'moovitamix')(table)) }}
{%- endmacro %}

{% macro default__source_list_items(table) -%}
    select * from {{ source('moovitamix', table) }}
    where _dlt_load_id in ({{ completed_load_ids() }})
{%- endmacro %}

{% macro spark__source_list_items(table) -%}
    select
        record_hash,
        user_id,
        position,
        track_id,
        min_by(_dlt_load_id, _snapshot_at) as _dlt_load_id
    from {{ source('moovitamix', table) }}
    where _dlt_load_id in ({{ completed_load_ids() }})
    group by record_hash, user_id, position, track_id
{%- endmacro %}
