{#-
    Elements of listen history versions (`model`: record_hash, user_id, position, load_id) that
    are in raw more than once (`loads`: dlt's `_dlt_loads`). After a passing build
    (macros/checked_loads.sql) only the elements of later loads are checked: those twice among
    themselves, and those written in a later load than the first load of their version in
    `versions` (the loader writes a version's elements with its first row, once), which a copy
    of an element already checked would be. Only the day's elements are grouped (a scan of
    raw's elements remains), not the whole history's. Otherwise every element is grouped.
-#}
{% test list_elements_written_once(model, versions, loads) %}

{%- set since = elements_checked_through() %}

{%- if since is none %}

    select record_hash, user_id, position, count(*) as occurrences
    from {{ model }}
    group by user_id, position, record_hash
    having count(*) > 1

{%- else %}

    {%- set load_number = 'decimal(38, 10)' %}

    with

    new_elements as (

        select record_hash, user_id, position, load_id
        from {{ model }}
        where {{ loads_after(loads, since) }}

    ),

    first_loads as (

        select user_id, record_hash, min(cast(load_id as {{ load_number }})) as first_load
        from {{ versions }}
        group by user_id, record_hash

    )

    -- one pass over the new elements: twice among themselves, or after their version's first
    select
        new_elements.record_hash,
        new_elements.user_id,
        new_elements.position,
        count(*) as occurrences
    from new_elements
    left join first_loads
        on
            new_elements.user_id = first_loads.user_id
            and new_elements.record_hash = first_loads.record_hash
    group by new_elements.user_id, new_elements.position, new_elements.record_hash
    having
        count(*) > 1
        or max(
            case
                when cast(new_elements.load_id as {{ load_number }}) > first_loads.first_load
                    then 1
                else 0
            end
        ) = 1

{%- endif %}

{% endtest %}

{#-
    `load_id in (...)`: the completed loads of `loads` after the load `since`, as literals (the
    planner then estimates the rows of each from raw's statistics). Load ids are dlt's seconds:
    compared as floats, whose precision is far below the time between two loads; a load id
    that is not a number (hand-made) is never after.
-#}
{% macro loads_after(loads, since) -%}
    {%- set after = [] -%}
    {%- if execute -%}
        {%- set completed = run_query(
            "select load_id from " ~ loads ~ " where status = 0"
        ).columns[0].values() -%}
        {%- for load_id in completed -%}
            {%- if is_load_id(load_id) and (load_id | float) > (since | float) -%}
                {%- do after.append("'" ~ load_id ~ "'") -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- if after -%}
        load_id in ({{ after | join(', ') }})
    {%- else -%}
        1 = 0
    {%- endif -%}
{%- endmacro %}
