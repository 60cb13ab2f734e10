{#- A copy, never rebuilt (full_refresh=false): the live lists are overwritten on each publish -#}
{#-
    The index on (model_run_id, user_id): the probe of whether the live run is kept, the lists
    of a run and user (fct_recommendation_uptake), one index entry per run for the runs kept.
    A post-hook, not `indexes`: dbt creates those only with the table, and the table of an
    existing deployment is never created again.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        full_refresh=false,
        on_schema_change='fail',
        enabled=target.type == 'postgres',
        post_hook=[
            "create unique index if not exists stg_recommendations__published_lists_run_user"
            " on {{ this }} (model_run_id, user_id)",
        ],
    )
}}
-- The lists of every model run ever published, one row per run and user: the user's tracks in
-- rank order. recommendations.user_top_tracks holds only the current run's; each build (before
-- the day's training) copies the lists in place if their run is not kept yet, so the lists a
-- run published are kept from the next day's build on. A table kept in `staging`, outside the
-- marts that write-audit-publish swaps: every build appends to the same copy.
-- The live table holds one run's lists (ml/publish.py puts a run's lists in place whole and
-- refuses a staged table holding another run's rows), so any of its rows names the run: the
-- run is looked up in the copy once (an index probe), and the lists are read in the live
-- table's key order (user_id, rank), which is the order of the aggregation: no sort.
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

live_run as (

    select cast(null as text) as model_run_id
    where false

),

{% else %}

published as (

    select * from {{ live }}

),

live_run as (

    -- the run whose lists are live (one per table: any row names it)
    select model_run_id from {{ live }}
    limit 1  -- noqa: AM09

),

{% endif %}

kept_already as (

    {% if is_incremental() %}
    -- the live run's lists were copied by an earlier build (ordered as the index: one probe)
    select kept.model_run_id from {{ this }} as kept
    where kept.model_run_id = (select live_run.model_run_id from live_run)
    order by kept.user_id
    limit 1
    {% else %}
    select cast(null as text) as model_run_id
    where false
    {% endif %}

),

to_keep as (

    select * from published
    where
        model_run_id = (select live_run.model_run_id from live_run)
        and not exists (select 1 from kept_already)

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
