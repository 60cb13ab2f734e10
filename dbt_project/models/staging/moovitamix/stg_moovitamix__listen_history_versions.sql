-- Spark: a table, so that the history is derived once per build, not once per reader
{{ config(materialized='table' if target.type == 'spark' else 'view') }}
-- Every version of every user's listen history, from completed loads.
with

source as (

    -- dlt's SCD2 rows (on Spark: derived from the lake's snapshots), completed loads only
    {{ source_versions('listen_history', 'user_id') }}

),

renamed as (

    select
        cast(user_id as bigint) as user_id,
        cast(item_count as integer) as item_count,
        cast(created_at as {{ type_timestamp_utc() }}) as created_at,
        cast(updated_at as {{ type_timestamp_utc() }}) as updated_at,
        cast(record_hash as {{ type_text() }}) as record_hash,
        cast(_dlt_valid_from as {{ type_timestamp_utc() }}) as valid_from,
        cast(_dlt_valid_to as {{ type_timestamp_utc() }}) as valid_to,
        _dlt_valid_to is null as is_current,
        cast(_dlt_load_id as {{ type_text() }}) as load_id

    from source
    where user_id is not null

)

select * from renamed
