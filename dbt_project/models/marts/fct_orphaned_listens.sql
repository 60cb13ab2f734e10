-- Listens the marts cannot hold: of a track the API does not serve (deleted, or never served)
-- or of a user it does not serve. Kept out of fct_listens and its foreign keys; counted here
-- and warned about by a test, so that a growing number is seen.
{#-
    Postgres: only the current items that can be orphans are read, found through raw's indexes
    on track_id and user_id instead of a scan of every element of every history version: those
    of a track id that the histories hold and dim_tracks does not (the distinct track ids, one
    index descent each: a loose index scan, through a plain staging view of raw's track ids,
    since the completed-load filter of the others hides the index's order) and those of a user
    whose current history dim_users does not serve. A superset of the orphans, filtered below
    as on Spark; `= any(array(...))` gives Postgres a bitmap scan of both indexes whatever the
    number of ids. The recursive scan is nested in its CTE: dbt's unit tests put their
    fixtures in the model's top-level WITH, which must stay plain.
-#}
-- depends_on: {{ ref('stg_moovitamix__listen_history_item_track_ids') }}
-- depends_on: {{ ref('stg_moovitamix__listen_history') }}
{%- set by_index = target.type == 'postgres' %}
with

{% if by_index %}

unserved_track_ids as (

    -- the distinct track ids of raw's history elements (any load), in index order, that
    -- dim_tracks does not hold
    select item_track_ids.track_id
    from (
        with recursive item_track_ids as (

            (
                select items.track_id
                from {{ ref('stg_moovitamix__listen_history_item_track_ids') }} as items
                order by items.track_id
                limit 1
            )

            union all

            select
                (
                    select items.track_id
                    from {{ ref('stg_moovitamix__listen_history_item_track_ids') }} as items
                    where items.track_id > item_track_ids.track_id
                    order by items.track_id
                    limit 1
                ) as track_id
            from item_track_ids
            where item_track_ids.track_id is not null

        )

        select item_track_ids.track_id from item_track_ids
    ) as item_track_ids
    where
        item_track_ids.track_id is not null
        and not exists (
            select 1 from {{ ref('dim_tracks') }} as served
            where served.track_id = item_track_ids.track_id
        )

),

unserved_user_ids as (

    select histories.user_id
    from {{ ref('stg_moovitamix__listen_history') }} as histories
    where not exists (
        select 1 from {{ ref('dim_users') }} as served
        where served.user_id = histories.user_id
    )

),

{% endif %}

current_items as (

    select * from {{ ref('stg_moovitamix__listen_history_items') }}
    {% if by_index %}
    where
        track_id = any(array(select unserved_track_ids.track_id from unserved_track_ids))
        or user_id = any(array(select unserved_user_ids.user_id from unserved_user_ids))
    {% endif %}

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
