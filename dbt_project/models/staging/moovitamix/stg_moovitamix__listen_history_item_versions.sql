-- The elements of every listen history version's list, from completed loads.
with

source as (

    select * from {{ source('moovitamix', 'listen_history__items') }}
    where _dlt_load_id in ({{ completed_load_ids() }})

),

renamed as (

    select
        cast(record_hash as text) as record_hash,
        cast(user_id as bigint) as user_id,
        cast(position as integer) as position,
        cast(track_id as bigint) as track_id,
        cast(_dlt_load_id as text) as load_id

    from source
    where user_id is not null and track_id is not null

)

select * from renamed
