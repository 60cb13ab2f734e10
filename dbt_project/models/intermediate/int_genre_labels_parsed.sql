-- A table, so that the labels are parsed once per build, not once per reader (seven marts
-- and this model's tests read it: at a million users each parse of every version took seconds)
{{
    config(
        materialized='table',
        pre_hook="{{ set_marts_work_mem() }}",
        post_hook="{{ analyze_model() }}",
    )
}}
-- The genre labels of every version of every track (`genres`) and user (`favorite_genres`),
-- split, keyed and mapped to a genre: one row per entity version and distinct genre.
with

track_versions as (

    select * from {{ ref('stg_moovitamix__track_versions') }}

),

user_versions as (

    select * from {{ ref('stg_moovitamix__user_versions') }}

),

known_genres as (

    {{ known_genre_keys() }}

),

genre_texts as (

    select
        'track' as entity_type,
        track_id as entity_id,
        valid_from,
        is_current,
        genres_text as genre_text
    from track_versions
    where genres_text is not null

    union all

    select
        'user' as entity_type,
        user_id as entity_id,
        valid_from,
        is_current,
        favorite_genres_text as genre_text
    from user_versions
    where favorite_genres_text is not null

),

distinct_texts as (

    -- few: combinations of a few genres, each parsed once rather than once per version
    select distinct genre_text
    from genre_texts

),

labels as (

    select
        distinct_texts.genre_text,
        parts.label_number,
        btrim(parts.genre_label) as genre_label

    from distinct_texts
    {{ split_to_rows(
        'distinct_texts.genre_text', genre_separator_pattern(), 'parts', 'genre_label', 'label_number'
    ) }}

),

mapped as (

    select
        labels.genre_text,
        labels.label_number,
        labels.genre_label,
        known_genres.genre_id is not null as is_known_genre,
        coalesce(known_genres.genre_id, {{ genre_slug('labels.genre_label') }}) as genre_id

    from labels
    left join known_genres
        on {{ genre_key('labels.genre_label') }} = known_genres.genre_key
    where labels.genre_label != ''

),

deduplicated as (

    -- a genre listed twice ("Rock, rock") counts once, at its first place
    select
        genre_text,
        genre_id,
        is_known_genre,
        min(label_number) as first_label_number,
        {{ first_by('genre_label', 'label_number') }} as genre_label

    from mapped
    group by genre_text, genre_id, is_known_genre

),

parsed as (

    select
        genre_text,
        genre_id,
        genre_label,
        is_known_genre,
        cast(
            row_number() over (
                partition by genre_text
                order by first_label_number
            ) - 1
            as integer
        ) as position

    from deduplicated

),

final as (

    select
        genre_texts.entity_type,
        genre_texts.entity_id,
        genre_texts.valid_from,
        genre_texts.is_current,
        parsed.genre_id,
        parsed.genre_label,
        parsed.is_known_genre,
        parsed.position

    from genre_texts
    inner join parsed
        on genre_texts.genre_text = parsed.genre_text

)

select * from final
