-- What each user listens to, by genre: counts, shares and ranks, over all their listens and
-- over the recent window (listens first seen in the last `recent_window_days` days up to
-- the as-of time, the latest listen the warehouse has seen). Feeds the ML job and analysts.
with

listens as (

    select * from {{ ref('fct_listens') }}

),

track_genres as (

    select * from {{ ref('bridge_track_genres') }}

),

favorite_genres as (

    select * from {{ ref('bridge_user_favorite_genres') }}

),

as_of as (

    select
        max(last_seen_at) as as_of_at,
        max(last_seen_at) - interval '{{ var("recent_window_days") }} days' as window_start_at

    from {{ ref('fct_listens') }}

),

genres_per_track as (

    select
        track_id,
        genre_id,
        count(*) over (partition by track_id) as track_genre_count

    from track_genres

),

listen_counts as (

    -- per user and track: all listens, and those first seen inside the window. Only a pair
    -- whose listens straddle the window's start needs its array counted; integer counts keep
    -- the sums below off Postgres' numeric (the sum of a bigint)
    select
        listens.user_id,
        listens.track_id,
        listens.listen_count,
        case
            when listens.first_seen_at > as_of.window_start_at then listens.listen_count
            when listens.last_seen_at > as_of.window_start_at
                then cast(
                    {{ count_elements_greater('listens.listened_at', 'as_of.window_start_at') }}
                    as integer
                )
            else 0
        end as listen_count_30d

    from listens
    cross join as_of

),

by_genre as (

    -- a listen counts once for each genre of its track; for shares it is split evenly
    -- among them, so that a user's shares add up to 1
    select
        listen_counts.user_id,
        genres_per_track.genre_id,
        sum(listen_counts.listen_count) as listen_count,
        sum(
            cast(listen_counts.listen_count as {{ type_double() }})
            / genres_per_track.track_genre_count
        ) as split_listens,
        sum(listen_counts.listen_count_30d) as listen_count_30d,
        sum(
            cast(listen_counts.listen_count_30d as {{ type_double() }})
            / genres_per_track.track_genre_count
        ) as split_listens_30d

    from listen_counts
    inner join genres_per_track
        on listen_counts.track_id = genres_per_track.track_id
    group by listen_counts.user_id, genres_per_track.genre_id

),

measured as (

    -- the genres a user listened to, and their favorite genres even if never listened to
    select
        coalesce(by_genre.user_id, favorite_genres.user_id) as user_id,
        coalesce(by_genre.genre_id, favorite_genres.genre_id) as genre_id,
        coalesce(by_genre.listen_count, 0) as listen_count,
        coalesce(by_genre.split_listens, 0) as split_listens,
        coalesce(by_genre.listen_count_30d, 0) as listen_count_30d,
        coalesce(by_genre.split_listens_30d, 0) as split_listens_30d,
        favorite_genres.preference_rank as favorite_rank

    from by_genre
    full outer join favorite_genres
        on
            by_genre.user_id = favorite_genres.user_id
            and by_genre.genre_id = favorite_genres.genre_id

),

shares as (

    select
        *,
        coalesce(
            split_listens / nullif(sum(split_listens) over (partition by user_id), 0), 0
        ) as listen_share,
        coalesce(
            split_listens_30d / nullif(sum(split_listens_30d) over (partition by user_id), 0), 0
        ) as listen_share_30d

    from measured

),

ranked as (

    select
        *,
        case
            when listen_count > 0 then
                row_number() over (
                    partition by user_id, listen_count > 0
                    order by
                        listen_share desc,
                        listen_count desc,
                        favorite_rank asc nulls last,
                        genre_id asc
                )
        end as genre_rank,
        case
            when listen_count_30d > 0 then
                row_number() over (
                    partition by user_id, listen_count_30d > 0
                    order by
                        listen_share_30d desc,
                        listen_count_30d desc,
                        favorite_rank asc nulls last,
                        genre_id asc
                )
        end as genre_rank_30d

    from shares

),

final as (

    select
        ranked.user_id,
        ranked.genre_id,
        cast(ranked.listen_count as integer) as listen_count,
        cast(ranked.listen_share as {{ type_double() }}) as listen_share,
        cast(ranked.genre_rank as integer) as genre_rank,
        ranked.favorite_rank is not null as is_favorite,
        cast(ranked.favorite_rank as integer) as favorite_rank,
        cast(ranked.listen_count_30d as integer) as listen_count_30d,
        cast(ranked.listen_share_30d as {{ type_double() }}) as listen_share_30d,
        cast(ranked.genre_rank_30d as integer) as genre_rank_30d,
        as_of.as_of_at

    from ranked
    cross join as_of

)

select * from final
