-- Spark: a table, so that the history is derived once per build, not once per reader
{{ config(materialized='table' if target.type == 'spark' else 'view') }}
-- The elements of every listen history version's list, from completed loads.
with

source as (

    -- completed loads only (on Spark: distinct over the lake's snapshots)
    {{ source_list_items('listen_history__items') }}

),

renamed as (

    select
        cast(record_hash as {{ type_text() }}) as record_hash,
        cast(user_id as bigint) as user_id,
        cast(position as integer) as position,
        cast(track_id as bigint) as track_id,
        cast(_dlt_load_id as {{ type_text() }}) as load_id

    from source
    where user_id is not null and track_id is not null

)

select * from renamed
