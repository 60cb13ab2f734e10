-- Each current user's favorite genres, in the order the API lists them (1 = the favorite).
with

favorite_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'user' and is_current

),

final as (

    select
        entity_id as user_id,
        genre_id,
        position + 1 as preference_rank

    from favorite_genres

)

select * from final
