-- The current version of every track the API serves (deleted tracks are not here).
with

track_versions as (

    select * from {{ ref('stg_moovitamix__track_versions') }}

),

current_versions as (

    select
        track_id,
        track_name,
        artist_name,
        songwriters,
        album_name,
        duration_text,
        duration_seconds,
        genres_text,
        created_at,
        updated_at,
        record_hash,
        valid_from,
        load_id

    from track_versions
    where is_current

)

select * from current_versions
