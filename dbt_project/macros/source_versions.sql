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
    hold rows of this table. The changes are kept incrementally in a log model per table
    (version_changelog.sql); a version runs from one change of its key to the next.
-#}
{% macro source_versions(table, key) -%}
    {{ return(adapter.dispatch('source_versions', 'moovitamix')(table, key)) }}
{%- endmacro %}

{% macro default__source_versions(table, key) -%}
    select * from {{ source('moovitamix', table) }}
    where _dlt_load_id in ({{ completed_load_ids() }})
{%- endmacro %}

{% macro spark__source_versions(table, key) -%}
    -- the versions are the log's starts, each valid until the key's next change
    select
        changes.*,
        changes.valid_from as _dlt_valid_from,
        changes.next_change as _dlt_valid_to
    from (
        select
            changelog.*,
            lead(changelog.valid_from) over (
                partition by changelog.{{ key }} order by changelog.valid_from
            ) as next_change
        from {{ ref('stg_moovitamix__' ~ table ~ '_changelog') }} as changelog
    ) as changes
    where not changes.is_deleted
{%- endmacro %}

{#-
    The elements of the listen history versions' lists, of completed loads. Postgres: raw holds
    them once per version. Spark: every snapshot holds those of every current version, so the
    distinct (user_id, record_hash, position, track_id), with the load that first wrote them,
    kept incrementally (version_changelog.sql).
-#}
{% macro source_list_items(table) -%}
    {{ return(adapter.dispatch('source_list_items', 'moovitamix')(table)) }}
{%- endmacro %}

{% macro default__source_list_items(table) -%}
    select * from {{ source('moovitamix', table) }}
    where _dlt_load_id in ({{ completed_load_ids() }})
{%- endmacro %}

{% macro spark__source_list_items(table) -%}
    select * from {{ ref('stg_moovitamix__' ~ table.replace('__', '_') ~ '_changelog') }}
{%- endmacro %}
