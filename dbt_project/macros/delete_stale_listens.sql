{#-
    The incremental fct_listens, driven by raw's scd2 validity rather than by comparing the
    table with its sources. Its watermark is the newest `history_valid_from` it holds: every
    listen history version that became current up to then is in the table. Every validity
    boundary after it is an event to look at. Rebuilding a user whose rows did not change
    rewrites the same rows, so a superset is safe: events between the watermark and the build
    that wrote the table (a load without history changes) are looked at again.
-#}

{#-
    The watermark of `{{ this }}` (an index scan), as a literal: the planner then estimates the
    rows after it from raw's statistics (a parameter would count as a third of every table) and
    reads them through raw's indexes. Read when the model compiles and when each pre-hook runs:
    the model and the users' delete (the first hook) get the same value, as nothing was deleted
    yet. Before any row: 1900.
-#}
{% macro listens_watermark() -%}
    {%- set watermark = '1900-01-01 00:00:00+00' -%}
    {%- if execute -%}
        {#- the prefix keeps the value text (dbt would parse a timestamp and drop its zone) -#}
        {%- set result = run_query(
            "select 'at ' || max(history_valid_from)::text from " ~ this
        ) -%}
        {%- set value = result.columns[0].values()[0] -%}
        {%- if value -%}
            {%- set watermark = value[3:] -%}
        {%- endif -%}
    {%- endif -%}
    {{ return(dbt.cast("'" ~ watermark ~ "'", type_timestamp_utc())) }}
{%- endmacro %}

{#-
    The users whose rows to rebuild: a listen history version started or ended after `since`
    (the history changed, appeared or was deleted); the user appeared or was deleted; a track
    their history holds appeared (its listens became valid).
-#}
{% macro listens_users_to_rebuild(since) -%}
    select history_versions.user_id
    from {{ ref('stg_moovitamix__listen_history_versions') }} as history_versions
    where history_versions.valid_from > {{ since }} or history_versions.valid_to > {{ since }}

    union

    select user_events.user_id
    from ({{ existence_events('stg_moovitamix__user_versions', 'user_id', since) }})
        as user_events

    union

    -- any version's items, not only the current one's (a superset: the users who held it),
    -- read through raw's index on the track
    select item_versions.user_id
    from {{ ref('stg_moovitamix__listen_history_item_versions') }} as item_versions
    where item_versions.track_id in (
        select track_events.track_id
        from ({{ existence_events('stg_moovitamix__track_versions', 'track_id', since) }})
            as track_events
        where track_events.track_id in (select tracks.track_id from {{ ref('dim_tracks') }} as tracks)
    )
{%- endmacro %}

{#- The tracks deleted after `since` (and not back): their rows go, their users' others stay. -#}
{% macro listens_deleted_tracks(since) -%}
    select track_events.track_id
    from ({{ existence_events('stg_moovitamix__track_versions', 'track_id', since) }})
        as track_events
    where track_events.track_id not in (select tracks.track_id from {{ ref('dim_tracks') }} as tracks)
{%- endmacro %}

{#-
    The keys of `model` (a staging *_versions model) that appeared or were deleted after
    `since`: at each boundary, versions that start count +1 and versions that end -1; an edit
    ends one version and starts the next at the same boundary, and cancels out.
-#}
{% macro existence_events(model, key, since) -%}
    select distinct events.{{ key }}
    from (
        select
            versions.{{ key }},
            versions.valid_from as changed_at,
            1 as starts
        from {{ ref(model) }} as versions
        where versions.valid_from > {{ since }}

        union all

        select
            versions.{{ key }},
            versions.valid_to as changed_at,
            -1 as starts
        from {{ ref(model) }} as versions
        where versions.valid_to > {{ since }}
    ) as events
    group by events.{{ key }}, events.changed_at
    having sum(events.starts) <> 0
{%- endmacro %}

{#-
    Pre-hooks of the incremental fct_listens, before the insert (same transaction): delete the
    rows that may no longer hold. First those of the users to rebuild, through the primary key
    (the model inserts their rows anew); then those of the deleted tracks (a lower watermark
    after the first delete only adds tracks whose rows are stale anyway). That covers every
    stale row: a row exists while its user and track exist and its track is in its user's
    current history. Nothing to do when the table does not exist yet.
-#}
{% macro delete_stale_listens(what) -%}
    {%- if not is_incremental() -%}
        {{ return('') }}
    {%- endif -%}
    delete from {{ this }} as listens
    {%- if what == 'users' %}
    where listens.user_id in ({{ listens_users_to_rebuild(listens_watermark()) }})
    {%- else %}
    where listens.track_id in ({{ listens_deleted_tracks(listens_watermark()) }})
    {%- endif %}
{%- endmacro %}
