{#-
    The load ids of dlt loads that completed (`_dlt_loads.status = 0`): staging reads only rows
    of these, so a load that failed half-way is never seen downstream.
-#}
{% macro completed_load_ids() -%}
    select loads.load_id
    from {{ source('moovitamix', '_dlt_loads') }} as loads
    where loads.status = 0
{%- endmacro %}
