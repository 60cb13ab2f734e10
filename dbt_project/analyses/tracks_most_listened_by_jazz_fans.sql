-- The 10 tracks most listened to by Jazz fans (users with Jazz among their favorite genres).
select
    tracks.track_id,
    tracks.track_name,
    tracks.artist_name,
    sum(listens.listen_count) as jazz_fan_listens,
    count(*) as jazz_fan_listeners
from marts.bridge_user_favorite_genres as favorites
inner join marts.fct_listens as listens
    on favorites.user_id = listens.user_id
inner join marts.dim_tracks as tracks
    on listens.track_id = tracks.track_id
where favorites.genre_id = 'jazz'
group by tracks.track_id, tracks.track_name, tracks.artist_name
order by jazz_fan_listens desc, jazz_fan_listeners desc, tracks.track_id asc
limit 10
