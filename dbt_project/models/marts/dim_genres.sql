-- Every genre: the 17 known genres of the contract, then every other label seen in any
-- version of a track or user, kept as served and flagged unknown.
with

known_genres as (

    select * from {{ ref('genres') }}

),

genre_labels as (

    select * from {{ ref('int_genre_labels_parsed') }}

),

unknown_genres as (

    select
        genre_id,
        min(genre_label) as genre_name

    from genre_labels
    where not is_known_genre
    group by genre_id

),

final as (

    select
        cast(genre_id as {{ type_text() }}) as genre_id,
        cast(genre_name as {{ type_text() }}) as genre_name,
        true as is_known_genre,
        cast(display_order as integer) as display_order
    from known_genres

    union all

    select
        genre_id,
        genre_name,
        false as is_known_genre,
        null as display_order
    from unknown_genres

)

select * from final
