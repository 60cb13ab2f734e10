-- How popular each current track is: listens, distinct listeners, rank overall and rank
-- within its primary genre (the first genre the API lists for it). Rank 1 = most listened;
-- ties are broken by listeners, then by track id, so ranks are unique and stable.
with

tracks as (

    select * from {{ ref('dim_tracks') }}

),

listens as (

    select * from {{ ref('fct_listens') }}

),

listens_per_track as (

    select
        track_id,
        sum(listen_count) as listen_count,
        count(*) as listener_count

    from listens
    group by track_id

),

measured as (

    select
        tracks.track_id,
        tracks.primary_genre_id,
        coalesce(listens_per_track.listen_count, 0) as listen_count,
        coalesce(listens_per_track.listener_count, 0) as listener_count

    from tracks
    left join listens_per_track
        on tracks.track_id = listens_per_track.track_id

),

final as (

    select
        track_id,
        cast(listen_count as integer) as listen_count,
        cast(listener_count as integer) as listener_count,
        cast(
            row_number() over (order by listen_count desc, listener_count desc, track_id asc)
            as integer
        ) as popularity_rank,
        primary_genre_id,
        cast(
            case
                when primary_genre_id is not null then
                    row_number() over (
                        partition by primary_genre_id
                        order by listen_count desc, listener_count desc, track_id asc
                    )
            end
            as integer
        ) as primary_genre_rank

    from measured

)

select * from final
