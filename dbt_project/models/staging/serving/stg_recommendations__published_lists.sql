{#- A copy, never rebuilt (full_refresh=false): the live lists are overwritten on each publish -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        full_refresh=false,
        on_schema_change='fail',
        enabled=target.type == 'postgres',
    )
}}
-- The lists of every model run ever published, one row per run and user: the user's tracks in
-- rank order. recommendations.user_top_tracks holds only the current run's; each build (before
-- the day's training) copies the lists in place if their run is not kept yet, so the lists a
-- run published are kept from the next day's build on. A table kept in `staging`, outside the
-- marts that write-audit-publish swaps: every build appends to the same copy.
{%- set live = load_relation(source('recommendations', 'user_top_tracks')) %}
with

{% if live is none %}

published as (

    -- nothing published yet (the first run builds before it trains)
    select
        cast(null as bigint) as user_id,
        cast(null as integer) as rank,
        cast(null as bigint) as track_id,
        cast(null as text) as model_run_id,
        cast(null as timestamptz) as generated_at
    where false

),

{% else %}

published as (

    select * from {{ live }}

),

{% endif %}

to_keep as (

    select * from published
    {% if is_incremental() %}
    where
        not exists (
            select 1 from {{ this }} as kept
            where kept.model_run_id = published.model_run_id
        )
    {% endif %}

),

final as (

    select
        cast(model_run_id as text) as model_run_id,
        cast(user_id as bigint) as user_id,
        min(generated_at) as generated_at,
        array_agg(cast(track_id as bigint) order by rank) as track_ids

    from to_keep
    group by model_run_id, user_id

)

select * from final
