{#- Spark: a full rebuild every time (its Parquet tables have no merge; see the README) -#}
{#- delete+insert, not merge: MERGE needs Postgres 15+, and the warehouse may be 14 -#}
{{
    config(
        materialized='incremental' if target.type == 'postgres' else 'table',
        incremental_strategy='delete+insert',
        unique_key=['user_id', 'track_id'],
        on_schema_change='fail',
        pre_hook="{{ delete_stale_listens() }}",
    )
}}
-- Who listened to what: one row per user and track, from the users' current listen histories.
-- A listen's time is when the warehouse first saw it: the `updated_at` of the first history
-- version whose list held it (see the docs' overview). Incremental: `delete_stale_listens`
-- (pre-hook) first removes the rows that no longer hold (their user's history changed, or
-- their user or track is gone), then the rows of the users whose history changed (or who
-- gained a valid listen) are merged in.
-- depends_on: {{ ref('stg_moovitamix__listen_history') }}
-- depends_on: {{ ref('stg_moovitamix__listen_history_items') }}
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

current_histories as (

    select * from {{ ref('stg_moovitamix__listen_history') }}

),

current_items as (

    select * from {{ ref('stg_moovitamix__listen_history_items') }}

),

built_histories as (

    -- the history version each user's rows were built from
    select distinct
        user_id,
        history_record_hash
    from {{ this }}

),

built_users as (

    select distinct user_id from built_histories

),

built_tracks as (

    select distinct track_id from {{ this }}

),

users_to_build as (

    -- the history changed since the user's rows were built (or the user is new) ...
    select current_histories.user_id
    from current_histories
    where
        not exists (
            select 1
            from built_histories
            where
                built_histories.user_id = current_histories.user_id
                and built_histories.history_record_hash = current_histories.record_hash
        )

    union

    -- ... or a listen became valid without a history change: its track or user was missing
    -- from the dimensions at the last build, so none of their rows are in the table
    select current_items.user_id
    from current_items
    where
        exists (
            select 1 from users
            where users.user_id = current_items.user_id
        )
        and exists (
            select 1 from tracks
            where tracks.track_id = current_items.track_id
        )
        and (
            not exists (
                select 1 from built_tracks
                where built_tracks.track_id = current_items.track_id
            )
            or not exists (
                select 1 from built_users
                where built_users.user_id = current_items.user_id
            )
        )

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

    -- the elements of the current version, each with the time of the first version holding it
    select
        user_id,
        position,
        track_id,
        min(seen_at) as listened_at,
        max(case when is_current then record_hash end) as history_record_hash

    from timed_items
    group by user_id, position, track_id
    having bool_or(is_current)

),

valid_listens as (

    -- listens of a user and a track that both exist now (the rest: fct_orphaned_listens)
    select current_listens.*
    from current_listens
    where
        exists (
            select 1 from users
            where users.user_id = current_listens.user_id
        )
        and exists (
            select 1 from tracks
            where tracks.track_id = current_listens.track_id
        )

),

final as (

    select
        user_id,
        track_id,
        cast(count(*) as integer) as listen_count,
        min(listened_at) as first_seen_at,
        max(listened_at) as last_seen_at,
        {{ ordered_array_agg('position', 'position') }} as positions,
        {{ ordered_array_agg('listened_at', 'position') }} as listened_at,
        min(history_record_hash) as history_record_hash,
        cast('{{ run_id() }}' as {{ type_text() }}) as run_id

    from valid_listens
    group by user_id, track_id

)

select * from final
