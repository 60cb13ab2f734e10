-- The current version of every user's listen history (one row per user the API serves).
with

history_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_versions') }}

),

current_versions as (

    select
        user_id,
        item_count,
        created_at,
        updated_at,
        record_hash,
        valid_from,
        load_id

    from history_versions
    where is_current

)

select * from current_versions
