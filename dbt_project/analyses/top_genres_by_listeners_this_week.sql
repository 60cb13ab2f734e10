-- Top 10 genres by listeners this week: the users with at least one listen of a track of the
-- genre in the 7 days up to the warehouse's as-of time (its latest listen).
with

as_of as (
    select max(last_seen_at) as as_of_at
    from marts.fct_listens
)

select
    genres.genre_name,
    count(distinct listens.user_id) as listeners
from marts.fct_listens as listens
cross join as_of
inner join marts.bridge_track_genres as track_genres
    on listens.track_id = track_genres.track_id
inner join marts.dim_genres as genres
    on track_genres.genre_id = genres.genre_id
where listens.last_seen_at > as_of.as_of_at - interval '7 days'
group by genres.genre_name
order by listeners desc, genres.genre_name asc
limit 10
