{#- Postgres only: its inputs (the published lists, the impressions) are not on Spark -#}
{#- delete+insert by day: the days recomputed replace theirs whole -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['listen_date'],
        on_schema_change='fail',
        enabled=target.type == 'postgres',
    )
}}
-- Did users play what they were offered? For each user and day: the tracks they heard that day
-- for the first time ever, and how many of those were in the list published for them the day
-- before, in the lists the API served them the day before, and in the popularity list of the
-- same length (the baseline). The lists of "the day before" are those of the latest model run
-- whose data ends before the day begins, in the data's clock: its data ends at the latest
-- listen time loaded before its lists were generated. Incremental: each build recomputes the
-- days from the latest one built (a day may have been partial) onwards. fct_listens is read
-- where it is used, not materialized whole in one CTE: the latest days through its index on
-- first_seen_at, the earlier listens of those days' users by a join on the user.
{#-
    The latest day built, as a literal: the planner then estimates the listens from it on from
    fct_listens' statistics (a parameter would count as a third of the table, and the joins
    after it were planned for millions of rows). Read when the model compiles.
-#}
{%- set since = "date '-infinity'" -%}
{%- if is_incremental() and execute -%}
{%- set latest = run_query("select max(listen_date)::text from " ~ this).columns[0][0] -%}
{%- if latest -%}{%- set since = "date '" ~ latest ~ "'" -%}{%- endif -%}
{%- endif %}
with

track_popularity as (

    -- distinct listeners per track over all of fct_listens (its listener_count: a row of
    -- fct_listens is one user and track)
    select * from {{ ref('track_popularity') }}

),

history_versions as (

    select * from {{ ref('stg_moovitamix__listen_history_versions') }}

),

published_lists as not materialized (

    -- read where it is used: the runs, and each listen's list through the index on
    -- (model_run_id, user_id), not the whole copy materialized once
    select * from {{ ref('stg_recommendations__published_lists') }}

),

impressions as (

    select * from {{ ref('stg_monitoring__recommendation_impressions') }}

),

loads as materialized (

    -- the data's clock at each load: its latest listen time (a version's updated_at); computed
    -- once, not once per run
    select
        valid_from as loaded_at,
        max(coalesce(updated_at, valid_from)) as latest_listen_at
    from history_versions
    group by valid_from

),

runs as (

    select
        model_run_id,
        min(generated_at) as generated_at,
        max(cardinality(track_ids)) as k
    from published_lists
    group by model_run_id

),

timed_runs as (

    -- each run's data end, and until when its lists were in place (null: still are)
    select
        runs.model_run_id,
        runs.generated_at,
        runs.k,
        (
            select max(loads.latest_listen_at) from loads
            where loads.loaded_at <= runs.generated_at
        ) as data_until_at,
        lead(runs.generated_at) over (
            order by runs.generated_at, runs.model_run_id
        ) as replaced_at
    from runs

),

new_listens as (

    -- each user's first listen of each track, on its day (UTC)
    select
        listens.user_id,
        listens.track_id,
        cast(timezone('UTC', listens.first_seen_at) as date) as listen_date
    from {{ ref('fct_listens') }} as listens
    where
        -- midnight (UTC) of the latest day built: a range on the index
        listens.first_seen_at >= timezone('UTC', cast({{ since }} as timestamp))
        -- a listen before the first run's data end is on no run's day (its day began
        -- before that): left out here rather than after reading every listen
        and listens.first_seen_at >= (select min(timed_runs.data_until_at) from timed_runs)

),

day_runs as (

    -- the run in place when each day began
    select distinct on (listen_days.listen_date)
        listen_days.listen_date,
        timed_runs.*
    from (select distinct listen_date from new_listens) as listen_days
    inner join timed_runs
        on timezone('UTC', timed_runs.data_until_at) < listen_days.listen_date
    order by listen_days.listen_date asc, timed_runs.generated_at desc

),

day_listens as (

    select
        new_listens.*,
        day_runs.model_run_id,
        day_runs.generated_at,
        day_runs.replaced_at,
        day_runs.data_until_at,
        day_runs.k
    from new_listens
    inner join day_runs on new_listens.listen_date = day_runs.listen_date

),

listed as materialized (

    -- the list of the day's run of each user with new listens, once per run and user (not once
    -- per listen: materialized, or Postgres moves the lookup after the join to the listens),
    -- looked up through the copy's index on (model_run_id, user_id) rather than the copy of
    -- every run hashed (it grows by a run a day); `offset 0` keeps Postgres from turning the
    -- lookup into that join
    select
        listeners.model_run_id,
        listeners.user_id,
        lists.track_ids
    from (
        select distinct
            day_listens.model_run_id,
            day_listens.user_id
        from day_listens
    ) as listeners
    cross join
        lateral (
            select published_lists.track_ids
            from published_lists
            where
                published_lists.model_run_id = listeners.model_run_id
                and published_lists.user_id = listeners.user_id
            offset 0  -- noqa: AM09
        ) as lists

),

published as (

    -- in the user's list of the day's run
    select
        day_listens.listen_date,
        day_listens.user_id,
        day_listens.model_run_id
    from day_listens
    inner join listed
        on
            day_listens.model_run_id = listed.model_run_id
            and day_listens.user_id = listed.user_id
    where day_listens.track_id = any(listed.track_ids)

),

served as (

    -- in any list served to the user while the day's run was in place
    select distinct
        day_listens.listen_date,
        day_listens.user_id,
        day_listens.track_id,
        day_listens.model_run_id
    from day_listens
    inner join impressions
        on
            day_listens.user_id = impressions.user_id
            and day_listens.generated_at <= impressions.served_at
            and (day_listens.replaced_at is null or day_listens.replaced_at > impressions.served_at)
    where day_listens.track_id = any(impressions.track_ids)

),

day_runs_data as (

    select distinct
        model_run_id,
        data_until_at
    from day_runs

),

not_yet_heard as (

    -- per run and track, the listeners first seen after the run's data end (the days being
    -- built, a small share of the listens), read through the index on first_seen_at
    select
        day_runs_data.model_run_id,
        listens.track_id,
        count(*) as listener_count
    from day_runs_data
    inner join {{ ref('fct_listens') }} as listens
        on day_runs_data.data_until_at < listens.first_seen_at
    group by day_runs_data.model_run_id, listens.track_id

),

popularity as (

    -- the popularity ranking of each run's data: distinct listeners by the run's data end
    -- (all of them less those not yet heard then), ties to the lower id
    select
        day_runs_data.model_run_id,
        track_popularity.track_id,
        row_number() over (
            partition by day_runs_data.model_run_id
            order by
                track_popularity.listener_count
                - coalesce(not_yet_heard.listener_count, 0) desc,
                track_popularity.track_id asc
        ) as popularity_rank
    from day_runs_data
    cross join track_popularity
    left join not_yet_heard
        on
            day_runs_data.model_run_id = not_yet_heard.model_run_id
            and track_popularity.track_id = not_yet_heard.track_id
    where track_popularity.listener_count > coalesce(not_yet_heard.listener_count, 0)

),

ranked_listens as (

    -- each new listen with its track's rank in the popularity of its run's data (a track
    -- nobody had heard is in no popularity list)
    select
        day_listens.*,
        popularity.popularity_rank
    from day_listens
    inner join popularity
        on
            day_listens.model_run_id = popularity.model_run_id
            and day_listens.track_id = popularity.track_id

),

history_lengths as (

    -- the length of each user's current listen history: no fewer elements than the distinct
    -- tracks of their rows in fct_listens, so no fewer than the tracks they had heard
    select
        user_id,
        item_count
    from history_versions
    where is_current

),

candidates as (

    -- the listens that can be in the user's popularity list: ranked within k plus the number
    -- of tracks the user had heard (fewer than k unheard tracks rank above it), bounded from
    -- above by the length of the user's history; the rest cannot, and are not joined to what
    -- the user had heard (the bound only leaves listens out: `baseline` tests each exactly)
    select ranked_listens.*
    from ranked_listens
    left join history_lengths
        on ranked_listens.user_id = history_lengths.user_id
    where
        history_lengths.item_count is null
        or ranked_listens.popularity_rank <= ranked_listens.k + history_lengths.item_count

),

listeners as (

    select distinct
        user_id,
        model_run_id,
        data_until_at
    from candidates

),

heard as (

    -- what each of those users had heard by the run's data end, with its rank: their rows of
    -- fct_listens read through its primary key (user_id first), user by user, not the whole
    -- table hashed
    select
        listeners.user_id,
        listeners.model_run_id,
        heard_rank.popularity_rank
    from listeners
    cross join
        lateral (
            select listens.track_id
            from {{ ref('fct_listens') }} as listens
            where
                listens.user_id = listeners.user_id
                and listens.first_seen_at <= listeners.data_until_at
        ) as heard_tracks
    inner join popularity as heard_rank
        on
            listeners.model_run_id = heard_rank.model_run_id
            and heard_tracks.track_id = heard_rank.track_id

),

baseline as (

    -- in the user's popularity list: the first k of the ranking the user had not heard, i.e.
    -- fewer than k unheard tracks rank above the track (the tracks ranked above it that the
    -- user had already heard are counted)
    select
        candidates.listen_date,
        candidates.user_id,
        candidates.model_run_id
    from candidates
    left join heard
        on
            candidates.user_id = heard.user_id
            and candidates.model_run_id = heard.model_run_id
            and candidates.popularity_rank > heard.popularity_rank
    group by
        candidates.listen_date,
        candidates.user_id,
        candidates.track_id,
        candidates.model_run_id,
        candidates.popularity_rank,
        candidates.k
    having candidates.popularity_rank - 1 - count(heard.popularity_rank) < candidates.k

),

counted as (

    -- one row per new listen, and one per hit: each of published, served and baseline holds
    -- a new listen at most once (fct_listens has one row per user and track), so counting the
    -- rows of each kind counts what joining them to the listens by (day, user, track) would
    select
        user_id,
        listen_date,
        model_run_id,
        'new' as counted_as
    from day_listens

    union all

    select
        user_id,
        listen_date,
        model_run_id,
        'published' as counted_as
    from published

    union all

    select
        user_id,
        listen_date,
        model_run_id,
        'served' as counted_as
    from served

    union all

    select
        user_id,
        listen_date,
        model_run_id,
        'baseline' as counted_as
    from baseline

),

final as (

    select
        user_id,
        listen_date,
        model_run_id,
        cast(count(*) filter (where counted_as = 'new') as integer) as new_tracks,
        cast(count(*) filter (where counted_as = 'published') as integer) as hits_published,
        cast(count(*) filter (where counted_as = 'served') as integer) as hits_served,
        cast(count(*) filter (where counted_as = 'baseline') as integer) as baseline_hits
    from counted
    group by user_id, listen_date, model_run_id

)

select * from final
