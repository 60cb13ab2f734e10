{{ config(enabled=target.type == 'postgres') }}
-- The lists the serving API returned to users (play-next lists, served for a track, are left
-- out); none while the API has not served, or before its table exists.
{%- set served = load_relation(source('monitoring', 'recommendation_impressions')) %}
with

{% if served is none %}

renamed as (

    select
        cast(null as timestamptz) as served_at,
        cast(null as bigint) as user_id,
        cast(null as text) as model_run_id,
        cast(null as text) as list_source,
        cast(null as text) as route,
        cast(null as integer) as k,
        cast(null as bigint[]) as track_ids
    where false

),

{% else %}

renamed as (

    select
        served.served_at,
        served.user_id,
        served.model_run_id,
        served.source as list_source,
        served.route,
        served.k,
        served.track_ids
    from {{ served }} as served

),

{% endif %}

final as (

    select * from renamed
    where user_id is not null

)

select * from final
