-- The tracks the API serves now, one row per track.
with

tracks as (

    select * from {{ ref('stg_moovitamix__tracks') }}

),

track_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'track' and is_current

),

genres_per_track as (

    select
        entity_id as track_id,
        max(case when position = 0 then genre_id end) as primary_genre_id,
        cast(count(*) as integer) as genre_count

    from track_genres
    group by entity_id

),

final as (

    select
        tracks.track_id,
        tracks.track_name,
        tracks.artist_name,
        tracks.songwriters,
        tracks.album_name,
        tracks.duration_seconds,
        tracks.duration_text,
        tracks.genres_text,
        genres_per_track.primary_genre_id,
        coalesce(genres_per_track.genre_count, 0) as genre_count,
        tracks.created_at,
        tracks.updated_at,
        tracks.valid_from

    from tracks
    left join genres_per_track
        on tracks.track_id = genres_per_track.track_id

)

select * from final
