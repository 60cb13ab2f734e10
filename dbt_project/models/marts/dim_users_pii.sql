-- Restricted: the personal data of the users the API serves now (names, e-mail).
with

users as (

    select * from {{ ref('stg_moovitamix__users') }}

),

final as (

    select
        user_id,
        first_name,
        last_name,
        email

    from users

)

select * from final
