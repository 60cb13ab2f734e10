-- A user's listen shares add up to 1 (over all listens, and over the recent window for a
-- user with a listen in it; a user with no listen of a genre-tagged track has only zeros).
with

features as (

    select * from {{ ref('user_genre_features') }}

),

per_user as (

    select
        user_id,
        sum(listen_share) as share_total,
        sum(listen_share_30d) as share_total_30d,
        sum(listen_count) as listen_total,
        sum(listen_count_30d) as listen_total_30d

    from features
    group by user_id

)

select *
from per_user
where
    abs(share_total - case when listen_total > 0 then 1 else 0 end) > 1e-9
    or abs(share_total_30d - case when listen_total_30d > 0 then 1 else 0 end) > 1e-9
