-- The elements of each user's current listen history: one row per listen, in list order.
with

item_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_item_versions') }}

),

current_histories as (

    select * from {{ ref('stg_moovitamix__listen_history') }}

),

current_items as (

    -- a filter, not a join: the elements of the version that is current
    select
        item_versions.user_id,
        item_versions.position,
        item_versions.track_id,
        item_versions.record_hash

    from item_versions
    where exists (
        select 1
        from current_histories
        where
            current_histories.user_id = item_versions.user_id
            and current_histories.record_hash = item_versions.record_hash
    )

)

select * from current_items
