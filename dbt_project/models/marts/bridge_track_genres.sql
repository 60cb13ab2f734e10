-- Which genres each current track has, in the order the API lists them.
with

track_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'track' and is_current

),

final as (

    select
        entity_id as track_id,
        genre_id,
        position,
        position = 0 as is_primary_genre

    from track_genres

)

select * from final
