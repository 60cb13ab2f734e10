{#-
    Pre-hook of the incremental fct_listens, before the merge (same transaction): delete the
    rows that no longer hold. A row is stale when its user's current history is not the version
    it was built from (the merge re-inserts that user's rows; a user without a history any more
    was deleted), or when its user or track is gone from the dimensions (deleted: the listen is
    now an orphan). Nothing to do when the table does not exist yet.
-#}
{% macro delete_stale_listens() -%}
    {%- if not is_incremental() -%}
        {{ return('') }}
    {%- endif -%}
    delete from {{ this }} as listens
    where
        not exists (
            select 1
            from {{ ref('stg_moovitamix__listen_history') }} as histories
            where
                histories.user_id = listens.user_id
                and histories.record_hash = listens.history_record_hash
        )
        or not exists (
            select 1 from {{ ref('dim_users') }} as users where users.user_id = listens.user_id
        )
        or not exists (
            select 1 from {{ ref('dim_tracks') }} as tracks where tracks.track_id = listens.track_id
        )
{%- endmacro %}
