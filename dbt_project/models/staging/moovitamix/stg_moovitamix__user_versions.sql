-- Spark: a table, so that the history is derived once per build, not once per reader
{{ config(materialized='table' if target.type == 'spark' else 'view') }}
-- Every version of every user, from completed loads: renamed and cast; e-mails normalised.
with

source as (

    -- dlt's SCD2 rows (on Spark: derived from the lake's snapshots), completed loads only
    {{ source_versions('users', 'id') }}

),

renamed as (

    select
        cast(id as bigint) as user_id,
        nullif(btrim(first_name), '') as first_name,
        nullif(btrim(last_name), '') as last_name,
        nullif(lower(btrim(email)), '') as email,
        nullif(btrim(gender), '') as gender,
        nullif(btrim(favorite_genres), '') as favorite_genres_text,
        cast(created_at as {{ type_timestamp_utc() }}) as created_at,
        cast(updated_at as {{ type_timestamp_utc() }}) as updated_at,
        cast(record_hash as {{ type_text() }}) as record_hash,
        cast(_dlt_valid_from as {{ type_timestamp_utc() }}) as valid_from,
        cast(_dlt_valid_to as {{ type_timestamp_utc() }}) as valid_to,
        _dlt_valid_to is null as is_current,
        cast(_dlt_load_id as {{ type_text() }}) as load_id

    from source

)

select * from renamed
