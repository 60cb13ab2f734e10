-- Every version of every track the API ever served: what changed, when, and which tracks
-- were deleted.
with

track_versions as (

    select * from {{ ref('stg_moovitamix__track_versions') }}

),

primary_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'track' and position = 0

),

sequenced as (

    select
        track_versions.*,
        lead(track_versions.valid_from) over (
            partition by track_versions.track_id order by track_versions.valid_from
        ) as next_valid_from,
        row_number() over (
            partition by track_versions.track_id order by track_versions.valid_from
        ) as version_number

    from track_versions

),

final as (

    select
        sequenced.track_id,
        cast(sequenced.version_number as integer) as version_number,
        sequenced.track_name,
        sequenced.artist_name,
        sequenced.songwriters,
        sequenced.album_name,
        sequenced.duration_seconds,
        sequenced.genres_text,
        primary_genres.genre_id as primary_genre_id,
        sequenced.created_at,
        sequenced.updated_at,
        sequenced.valid_from,
        sequenced.valid_to,
        sequenced.is_current,
        -- retired without a successor starting at that moment: gone from a complete extract
        coalesce(
            sequenced.valid_to is not null
            and (
                sequenced.next_valid_from is null or sequenced.next_valid_from != sequenced.valid_to
            ),
            false
        ) as is_deleted

    from sequenced
    left join primary_genres
        on
            sequenced.track_id = primary_genres.entity_id
            and sequenced.valid_from = primary_genres.valid_from

)

select * from final
