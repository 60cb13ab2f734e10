-- Users whose favorite genre is not the genre they listen to most.
select
    users.user_id,
    users.favorite_genre_id,
    features.genre_id as most_listened_genre_id,
    features.listen_share as most_listened_share
from marts.dim_users as users
inner join marts.user_genre_features as features
    on
        users.user_id = features.user_id
        and features.genre_rank = 1
where features.genre_id is distinct from users.favorite_genre_id
order by features.listen_share desc, users.user_id asc
