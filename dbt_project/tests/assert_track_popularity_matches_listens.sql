-- track_popularity counts exactly the listens and listeners of fct_listens.
with

popularity as (

    select
        sum(listen_count) as listen_total,
        sum(listener_count) as listener_total

    from {{ ref('track_popularity') }}

),

listens as (

    select
        coalesce(sum(listen_count), 0) as listen_total,
        count(*) as listener_total

    from {{ ref('fct_listens') }}

)

select
    popularity.listen_total as popularity_listen_total,
    listens.listen_total as fact_listen_total,
    popularity.listener_total as popularity_listener_total,
    listens.listener_total as fact_listener_total

from popularity
cross join listens
where
    popularity.listen_total != listens.listen_total
    or popularity.listener_total != listens.listener_total
