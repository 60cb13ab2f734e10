{#- Spark: a full rebuild every time (its Parquet tables have no merge; see the README) -#}
{#-
    append: the pre-hooks delete every row of the users this build writes (the same users: the
    watermark is read before either deletes), so a merge on the key would find nothing to
    replace; the primary key stops the build if a row were written twice. full_refresh: the
    transform step rebuilds it in full when many histories changed (dbt_project/rebuild.py)
-#}
{{
    config(
        materialized='incremental' if target.type == 'postgres' else 'table',
        incremental_strategy='append',
        on_schema_change='fail',
        full_refresh=(true if env_var('MVX_DBT_REBUILD_FCT_LISTENS', '') == '1' else none),
        pre_hook=[
            "{{ delete_stale_listens('users') }}",
            "{{ delete_stale_listens('tracks') }}",
            "{{ plan_listens_build() }}",
        ],
        indexes=[{'columns': ['history_valid_from']}, {'columns': ['first_seen_at']}],
    )
}}
-- Who listened to what: one row per user and track, from the users' current listen histories.
-- A listen's time is when the warehouse first saw it: the `updated_at` of the first history
-- version whose list held it (see the docs' overview). Incremental, driven by raw's scd2
-- validity: the users with an event after the table's watermark (the newest
-- `history_valid_from` it holds) are rebuilt; `delete_stale_listens` (pre-hook) first deletes
-- their rows, then their rows are appended (macros/delete_stale_listens.sql). The index on
-- `history_valid_from` makes reading the watermark an index scan; the one on `first_seen_at`
-- finds the listens of the latest days (fct_recommendation_uptake) without a scan.
-- depends_on: {{ ref('stg_moovitamix__user_versions') }}
-- depends_on: {{ ref('stg_moovitamix__track_versions') }}
with

history_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_versions') }}

),

item_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_item_versions') }}

),

users as (

    select * from {{ ref('dim_users') }}

),

tracks as (

    select * from {{ ref('dim_tracks') }}

),

{% if is_incremental() %}

users_to_build as (

    -- the users with a scd2 event after the table's watermark (macros/delete_stale_listens.sql):
    -- the pre-hook deleted their rows
    {{ listens_users_to_rebuild(listens_watermark()) }}

),

{% endif %}

timed_items as (

    -- every element of every version of the histories to build, with the version's time
    select
        item_versions.user_id,
        item_versions.position,
        item_versions.track_id,
        history_versions.is_current,
        history_versions.record_hash,
        history_versions.valid_from,
        coalesce(history_versions.updated_at, history_versions.valid_from) as seen_at

    from item_versions
    inner join history_versions
        on
            item_versions.user_id = history_versions.user_id
            and item_versions.record_hash = history_versions.record_hash
    {% if is_incremental() %}
    where item_versions.user_id in (select users_to_build.user_id from users_to_build)
    {% endif %}

),

current_listens as (

    -- the elements of the current version, each with the time of the first version holding it;
    -- grouped by user and track first, so that one sort serves both aggregations
    select
        user_id,
        track_id,
        position,
        min(seen_at) as listened_at,
        max(case when is_current then record_hash end) as history_record_hash,
        max(case when is_current then valid_from end) as history_valid_from

    from timed_items
    group by user_id, track_id, position
    having bool_or(is_current)

),

listen_pairs as (

    select
        user_id,
        track_id,
        cast(count(*) as integer) as listen_count,
        min(listened_at) as first_seen_at,
        max(listened_at) as last_seen_at,
        {{ ordered_array_agg('position', 'position') }} as positions,
        {{ ordered_array_agg('listened_at', 'position') }} as listened_at,
        min(history_record_hash) as history_record_hash,
        min(history_valid_from) as history_valid_from,
        cast('{{ run_id() }}' as {{ type_text() }}) as run_id

    from current_listens
    group by user_id, track_id

),

final as (

    -- listens of a user and a track that both exist now (the rest: fct_orphaned_listens),
    -- checked per pair: the check depends on the user and the track alone
    select listen_pairs.*
    from listen_pairs
    where
        exists (
            select 1 from users
            where users.user_id = listen_pairs.user_id
        )
        and exists (
            select 1 from tracks
            where tracks.track_id = listen_pairs.track_id
        )

)

select * from final
