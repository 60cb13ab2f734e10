-- Every version of every user's listen history, from completed loads.
with

source as (

    select * from {{ source('moovitamix', 'listen_history') }}
    where _dlt_load_id in ({{ completed_load_ids() }})

),

renamed as (

    select
        cast(user_id as bigint) as user_id,
        cast(item_count as integer) as item_count,
        cast(created_at as timestamptz) as created_at,
        cast(updated_at as timestamptz) as updated_at,
        cast(record_hash as text) as record_hash,
        cast(_dlt_valid_from as timestamptz) as valid_from,
        cast(_dlt_valid_to as timestamptz) as valid_to,
        _dlt_valid_to is null as is_current,
        cast(_dlt_load_id as text) as load_id

    from source
    where user_id is not null

)

select * from renamed
