-- The track id of every element raw holds, of any load, completed or not: a superset, read by
-- fct_orphaned_listens through raw's index on track_id (one index descent per distinct id).
-- A plain view over the source, so that Postgres reads the index in order; the completed-load
-- filter of the other staging views would hide that order.
select track_id
from {{ source('moovitamix', 'listen_history__items') }}
