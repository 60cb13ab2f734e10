-- Every version of every user the API ever served (no personal data): what changed, when,
-- and which users were deleted.
with

user_versions as (

    select * from {{ ref('stg_moovitamix__user_versions') }}

),

favorite_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'user' and position = 0

),

sequenced as (

    select
        user_versions.*,
        lead(user_versions.valid_from) over (
            partition by user_versions.user_id order by user_versions.valid_from
        ) as next_valid_from,
        row_number() over (
            partition by user_versions.user_id order by user_versions.valid_from
        ) as version_number

    from user_versions

),

final as (

    select
        sequenced.user_id,
        cast(sequenced.version_number as integer) as version_number,
        sequenced.gender,
        favorite_genres.genre_id as favorite_genre_id,
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
    left join favorite_genres
        on
            sequenced.user_id = favorite_genres.entity_id
            and sequenced.valid_from = favorite_genres.valid_from

)

select * from final
