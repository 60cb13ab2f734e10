-- Listens the marts cannot hold: of a track the API does not serve (deleted, or never served)
-- or of a user it does not serve. Kept out of fct_listens and its foreign keys; counted here
-- and warned about by a test, so that a growing number is seen.
with

item_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_item_versions') }}

),

current_histories as (

    select * from {{ ref('stg_moovitamix__listen_history') }}

),

users as (

    select * from {{ ref('dim_users') }}

),

tracks as (

    select * from {{ ref('dim_tracks') }}

),

tracks_history as (

    -- every version of every track the API ever served (indexed by track_id: its key)
    select * from {{ ref('dim_tracks_history') }}

),

orphaned_versions as (

    -- the elements of any version of a user or a track the API does not serve now: the two
    -- lookups first, while the items are read, as they leave few rows
    select
        item_versions.user_id,
        item_versions.track_id,
        item_versions.position,
        item_versions.record_hash,
        users.user_id is null as is_unknown_user

    from item_versions
    left join users
        on item_versions.user_id = users.user_id
    left join tracks
        on item_versions.track_id = tracks.track_id
    where users.user_id is null or tracks.track_id is null

),

orphaned_items as (

    -- of those, the elements of the current version (as stg_moovitamix__listen_history_items)
    select
        orphaned_versions.user_id,
        orphaned_versions.track_id,
        orphaned_versions.position,
        orphaned_versions.is_unknown_user

    from orphaned_versions
    where exists (
        select 1
        from current_histories
        where
            current_histories.user_id = orphaned_versions.user_id
            and current_histories.record_hash = orphaned_versions.record_hash
    )

),

classified as (

    select
        orphaned_items.user_id,
        orphaned_items.track_id,
        orphaned_items.position,
        case
            when orphaned_items.is_unknown_user then 'unknown_user'
            when exists (
                select 1
                from tracks_history
                where tracks_history.track_id = orphaned_items.track_id
            ) then 'deleted_track'
            else 'unknown_track'
        end as orphan_reason

    from orphaned_items

),

final as (

    select
        user_id,
        track_id,
        orphan_reason,
        cast(count(*) as integer) as listen_count,
        {{ ordered_array_agg('position', 'position') }} as positions

    from classified
    group by user_id, track_id, orphan_reason

)

select * from final
