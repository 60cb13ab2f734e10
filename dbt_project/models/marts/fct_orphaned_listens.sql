-- Listens the marts cannot hold: of a track the API does not serve (deleted, or never served)
-- or of a user it does not serve. Kept out of fct_listens and its foreign keys; counted here
-- and warned about by a test, so that a growing number is seen.
with

current_items as (

    select * from {{ ref('stg_moovitamix__listen_history_items') }}

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

orphaned_items as (

    select
        current_items.user_id,
        current_items.track_id,
        current_items.position,
        users.user_id is null as is_unknown_user

    from current_items
    left join users
        on current_items.user_id = users.user_id
    left join tracks
        on current_items.track_id = tracks.track_id
    where users.user_id is null or tracks.track_id is null

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
