-- The current version of every user the API serves (deleted users are not here).
with

user_versions as (

    select * from {{ ref('stg_moovitamix__user_versions') }}

),

current_versions as (

    select
        user_id,
        first_name,
        last_name,
        email,
        gender,
        favorite_genres_text,
        created_at,
        updated_at,
        record_hash,
        valid_from,
        load_id

    from user_versions
    where is_current

)

select * from current_versions
