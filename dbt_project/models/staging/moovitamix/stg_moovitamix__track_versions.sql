-- Spark: a table, so that the history is derived once per build, not once per reader
{{ config(materialized='table' if target.type == 'spark' else 'view') }}
-- Every version of every track, from completed loads: renamed, cast and parsed.
with

source as (

    -- dlt's SCD2 rows (on Spark: derived from the lake's snapshots), completed loads only
    {{ source_versions('tracks', 'id') }}

),

renamed as (

    select
        cast(id as bigint) as track_id,
        nullif(btrim(name), '') as track_name,
        nullif(btrim(artist), '') as artist_name,
        nullif(btrim(songwriters), '') as songwriters,
        nullif(btrim(album), '') as album_name,
        nullif(btrim(duration), '') as duration_text,
        {{ parse_duration_seconds('duration') }} as duration_seconds,
        nullif(btrim(genres), '') as genres_text,
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
