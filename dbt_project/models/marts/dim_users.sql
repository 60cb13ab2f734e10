-- The users the API serves now, one row per user, without personal data (see dim_users_pii).
with

users as (

    select * from {{ ref('stg_moovitamix__users') }}

),

favorite_genres as (

    select * from {{ ref('int_genre_labels_parsed') }}
    where entity_type = 'user' and is_current

),

favorites_per_user as (

    select
        entity_id as user_id,
        max(case when position = 0 then genre_id end) as favorite_genre_id,
        cast(count(*) as integer) as favorite_genre_count

    from favorite_genres
    group by entity_id

),

final as (

    select
        users.user_id,
        users.gender,
        favorites_per_user.favorite_genre_id,
        coalesce(favorites_per_user.favorite_genre_count, 0) as favorite_genre_count,
        users.created_at,
        users.updated_at,
        users.valid_from

    from users
    left join favorites_per_user
        on users.user_id = favorites_per_user.user_id

)

select * from final
